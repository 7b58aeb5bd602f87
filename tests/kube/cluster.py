"""A throwaway, secured Kubernetes control plane on loopback for the kube test lane.

Real components, built by tools/kube/build.sh: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler; kwok plays the kubelets of three nodes (tests/kube/kwok.yaml says how pods move).
Everything listens on 127.0.0.1 only, on free ports, and lives in one work directory:

    pki/            a CA made on the fly, serving and client certificates, the service-account key
    kubeconfigs/    admin.kubeconfig (system:masters) and one per component and per test user
    logs/<name>.log each component's output, kept after stop for failing tests to point at
    etcd/           etcd's data: emptied by start(), kept across kill_/start_component()
    podlogs/        the files that simulated containers "print" to (see PodLog)

Security is the real thing: TLS everywhere (etcd too, with client certificates), client
certificate authentication, service-account tokens signed by the API server, Node,RBAC
authorization, the admission chain with PodSecurity, ResourceQuota, LimitRanger,
ServiceAccount, NamespaceLifecycle and ValidatingAdmissionPolicy, and each controller with its own
identity (system:kube-controller-manager with --use-service-account-credentials,
system:kube-scheduler, and kwok as system:kwok-controller bound to a role of its own).

Use from Python::

    with Cluster.start(workdir) as cluster:       # or cluster = Cluster.start(...); cluster.stop()
        api = cluster.admin_client()              # kubernetes.client.ApiClient as cluster admin
        log = cluster.pod_log("ns", "pod")        # the pod "prints" what log.write() appends
        log.write("hello", "world")
        cluster.exit_pod("ns", "pod", 3)          # all its containers exit 3: pod Failed
        cluster.kill_apiserver(); cluster.compact_etcd(); cluster.start_apiserver()
        cluster.kill_component("controller-manager"); cluster.start_component(...)

or from a shell: `python -m tests.kube.cluster [--workdir DIR]` starts it, prints the admin
kubeconfig path and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "kube" / "build.sh"
KWOK_STAGES = Path(__file__).resolve().parent / "kwok.yaml"

SERVICE_CIDR = "10.96.0.0/16"  # virtual: cluster IPs are allocated, never connected to
POD_CIDR = "10.244.0.0/16"  # kwok writes pod IPs from it into pod status, nothing more
NODE_NAMES = ("kwok-node-0", "kwok-node-1", "kwok-node-2")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
EXIT_CODE_ANNOTATION = "lane.codexk8s.io/exit-code"
EXIT_REASON_ANNOTATION = "lane.codexk8s.io/exit-reason"
ADMISSION_PLUGINS = (
    # All default-on in v1.37 already; named so that the lane does not depend on that.
    "NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,Priority,"
    "DefaultTolerationSeconds,ValidatingAdmissionPolicy,ResourceQuota"
)
# Controllers the lane relies on; "*" (every default-on controller) runs them all, this list is
# checked against the controller manager's log so a renamed one fails loudly.
REQUIRED_CONTROLLERS = (
    "job-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "resourcequota-controller",
    "ttl-after-finished-controller",
    "pod-garbage-collector-controller",
    "root-ca-certificate-publisher-controller",
)


class ClusterError(RuntimeError):
    """The lane's control plane could not be built, started or reached (never a skip)."""


# ---------------------------------------------------------------------------------------------
# Binaries


def build_binaries(*, quiet: bool = False) -> Path:
    """Build the lane's binaries if missing (tools/kube/build.sh) and return their directory.

    A missing Go toolchain or a failed build raises ClusterError with the script's message."""
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise ClusterError(f"cannot run {BUILD_SCRIPT}: {exc}") from exc
    if not quiet or proc.returncode:
        sys.stderr.write(proc.stdout)
    if proc.returncode:
        raise ClusterError(f"{BUILD_SCRIPT} failed (exit {proc.returncode}); output above")
    bindir = Path(proc.stdout.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not (bindir / b).is_file()]
    if missing:
        raise ClusterError(f"{BUILD_SCRIPT} left no {', '.join(missing)} in {bindir}")
    return bindir


BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)


# ---------------------------------------------------------------------------------------------
# PKI


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


class Pki:
    """A CA made on the fly and the certificates signed by it, as PEM files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = CertPair(self.dir / "ca.crt", self.dir / "ca.key")
        if not self.ca.cert.exists():
            self._make_ca()
        self._ca_key = serialization.load_pem_private_key(self.ca.key.read_bytes(), None)
        self._ca_cert = x509.load_pem_x509_certificate(self.ca.cert.read_bytes())

    @staticmethod
    def _write_key(path: Path, key: Any) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def _make_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "codexk8s-kube-lane-ca")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        self._write_key(self.ca.key, key)
        self.ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        cn: str,
        orgs: tuple[str, ...] = (),
        server: bool = False,
        client: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> CertPair:
        """A key and certificate `<name>.key/.crt` (made once per directory, then reused)."""
        pair = CertPair(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        if pair.cert.exists() and pair.key.exists():
            return pair
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if dns or ips:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        self._write_key(pair.key, key)
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pair

    def service_account_keys(self) -> CertPair:
        """The key the API server signs service-account tokens with (`cert` is its public key)."""
        pair = CertPair(self.dir / "sa.pub", self.dir / "sa.key")
        if not pair.key.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self._write_key(pair.key, key)
            pair.cert.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        return pair


# ---------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Component:
    """One started process: its own process group, its output in `log`."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n==== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # own process group: signals reach it and only it
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ClusterError(
                f"{self.name} exited with {self.proc.returncode}; last lines of {self.log}:\n"
                + tail(self.log)
            )

    def kill(self) -> None:
        """SIGKILL the process group, as a crash would, and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        # Anything the process group still holds (children included) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


def wait_until(
    what: str, check: Callable[[], Any], timeout: float, *, alive: Callable[[], None]
) -> Any:
    """Poll `check` until it returns something truthy; `alive` raises if a process died."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        alive()
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing may not answer yet
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last!r})" if last else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# Simulated containers


@dataclass
class PodLog:
    """The log file of a simulated container: what `write` appends is what pods/log serves.

    Lines are written in the CRI log format the kubelet's runtime writes (`<RFC3339Nano time>
    <stream> F <text>`), which kwok's kubelet server reads back, follow included."""

    path: Path

    def write(self, *lines: str, stream: str = "stdout", at: dt.datetime | None = None) -> None:
        """Append complete lines (no newline inside one); `at` is their timestamp (now)."""
        with self.path.open("a", encoding="utf-8") as out:
            for line in lines:
                if "\n" in line:
                    raise ValueError(f"one line at a time: {line!r}")
                stamp = format_timestamp(at or dt.datetime.now(dt.UTC))
                out.write(f"{stamp} {stream} F {line}\n")
            out.flush()
            os.fsync(out.fileno())

    def write_partial(self, text: str, stream: str = "stdout") -> None:
        """Append a fragment that the next write continues (CRI tag P): one log line in parts."""
        with self.path.open("a", encoding="utf-8") as out:
            out.write(f"{format_timestamp(dt.datetime.now(dt.UTC))} {stream} P {text}\n")


def format_timestamp(at: dt.datetime) -> str:
    at = at.astimezone(dt.UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond:06d}000Z"


# ---------------------------------------------------------------------------------------------
# The cluster


@dataclass
class Cluster:
    """The control plane; build one with Cluster.start()."""

    workdir: Path
    bindir: Path
    pki: Pki
    ports: dict[str, int]
    components: dict[str, Component] = field(default_factory=dict)
    version: str = ""
    nodes: tuple[str, ...] = NODE_NAMES
    _down: set[str] = field(default_factory=set)  # components killed on purpose
    _clients: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    # -- starting -------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path | str | None = None,
        *,
        bindir: Path | None = None,
        nodes: tuple[str, ...] = NODE_NAMES,
        timeout: float = 120.0,
    ) -> Cluster:
        """Build the binaries if missing, start every component, wait until the cluster is usable.

        Usable: /readyz answers ok, every node is Ready, the `default` service account exists,
        and the controller manager runs the controllers the lane needs."""
        started = time.monotonic()
        bindir = bindir or build_binaries(quiet=True)
        workdir = Path(workdir or tempfile.mkdtemp(prefix="kube-lane-"))
        workdir.mkdir(parents=True, exist_ok=True)
        # A start is a new cluster: no objects from an earlier one in a reused work directory
        # (their nodes would point at the old kwok port). Certificates and logs are kept.
        shutil.rmtree(workdir / "etcd", ignore_errors=True)
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
        cluster = cls(
            workdir=workdir.resolve(),
            bindir=bindir,
            pki=Pki(workdir / "pki"),
            ports={name: free_port() for name in names},
            nodes=nodes,
        )
        # Whatever ends this interpreter short of SIGKILL stops the components too.
        atexit.register(cluster.stop)
        try:
            cluster._boot(nodes, timeout)
        except BaseException:
            cluster.stop()
            raise
        cluster.startup_seconds = time.monotonic() - started
        return cluster

    startup_seconds: float = 0.0

    def _boot(self, nodes: tuple[str, ...], timeout: float) -> None:
        self._make_certs()
        (self.workdir / "podlogs").mkdir(exist_ok=True)
        self._component_etcd().start()
        wait_until("etcd /health", self._etcd_healthy, timeout, alive=self._alive)
        self.start_apiserver(timeout=timeout)
        self._install_kwok_api()
        self._create_nodes(nodes)
        for name in ("controller-manager", "scheduler", "kwok"):
            self._component(name).start()
        wait_until("nodes Ready", lambda: self._nodes_ready(nodes), timeout, alive=self._alive)
        wait_until(
            "the default service account", self._default_sa_exists, timeout, alive=self._alive
        )
        wait_until(
            "controller manager and scheduler healthz",
            lambda: self._healthz("controller-manager") and self._healthz("scheduler"),
            timeout,
            alive=self._alive,
        )
        self._check_controllers()
        self.version = self.core_get("/version")["gitVersion"]

    def _make_certs(self) -> None:
        pki = self.pki
        loop = ("127.0.0.1",)
        pki.issue(
            "apiserver",
            cn="kube-apiserver",
            server=True,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=(*loop, str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))),
        )
        # Client use too: etcd's HTTP/JSON gateway dials etcd's own gRPC port with this
        # certificate, and etcd asks every client for one.
        pki.issue("etcd-server", cn="etcd", server=True, client=True, dns=("localhost",), ips=loop)
        pki.issue("apiserver-etcd-client", cn="kube-apiserver-etcd-client", client=True)
        pki.issue("apiserver-kubelet-client", cn="kube-apiserver-kubelet-client", client=True)
        pki.issue("kwok-kubelet-server", cn="kwok", server=True, dns=("localhost",), ips=loop)
        pki.service_account_keys()
        self.kubeconfig_for("admin", "kubernetes-admin", ("system:masters",))
        self.kubeconfig_for("controller-manager", "system:kube-controller-manager")
        self.kubeconfig_for("scheduler", "system:kube-scheduler")
        self.kubeconfig_for("kwok", "system:kwok-controller")

    # -- components ----------------------------------------------------------------------------

    def _component(self, name: str) -> Component:
        if name not in self.components:
            factory = {
                "etcd": self._component_etcd,
                "apiserver": self._component_apiserver,
                "controller-manager": self._component_controller_manager,
                "scheduler": self._component_scheduler,
                "kwok": self._component_kwok,
            }[name]
            factory()
        return self.components[name]

    def _add(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Component:
        comp = Component(name, argv, self.workdir / "logs" / f"{name}.log", env)
        self.components[name] = comp
        return comp

    def _component_etcd(self) -> Component:
        client = f"https://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        tls = self.pki.issue("etcd-server", cn="etcd", server=True, client=True)
        return self._add(
            "etcd",
            [
                str(self.bindir / "etcd"),
                "--name=lane",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=lane={peer}",
                "--listen-metrics-urls=",
                f"--cert-file={tls.cert}",
                f"--key-file={tls.key}",
                "--client-cert-auth=true",
                f"--trusted-ca-file={self.pki.ca.cert}",
                # Throwaway data: durability is not worth the fsync latency in tests.
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )

    def _component_apiserver(self) -> Component:
        p = self.pki
        tls = p.issue("apiserver", cn="kube-apiserver", server=True)
        etcd_client = p.issue("apiserver-etcd-client", cn="kube-apiserver-etcd-client", client=True)
        kubelet_client = p.issue(
            "apiserver-kubelet-client", cn="kube-apiserver-kubelet-client", client=True
        )
        sa = p.service_account_keys()
        return self._add(
            "apiserver",
            [
                str(self.bindir / "kube-apiserver"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={tls.cert}",
                f"--tls-private-key-file={tls.key}",
                f"--client-ca-file={p.ca.cert}",
                f"--etcd-servers=https://127.0.0.1:{self.ports['etcd']}",
                f"--etcd-cafile={p.ca.cert}",
                f"--etcd-certfile={etcd_client.cert}",
                f"--etcd-keyfile={etcd_client.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={ADMISSION_PLUGINS}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The `kubernetes` Service gets no endpoints: its address would be 127.0.0.1,
                # which the reconciler refuses, and nothing in this cluster dials it.
                "--endpoint-reconciler-type=none",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                f"--kubelet-certificate-authority={p.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _component_controller_manager(self) -> Component:
        p = self.pki
        kubeconfig = self.workdir / "kubeconfigs" / "controller-manager.kubeconfig"
        return self._add(
            "controller-manager",
            [
                str(self.bindir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                f"--cert-dir={self.workdir / 'controller-manager'}",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={p.service_account_keys().key}",
                f"--root-ca-file={p.ca.cert}",
                f"--cluster-signing-cert-file={p.ca.cert}",
                f"--cluster-signing-key-file={p.ca.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # One instance, and it must survive kill_apiserver(): a leader that cannot renew
                # its lease exits.
                "--leader-elect=false",
                "--profiling=false",
                "--v=2",
            ],
        )

    def _component_scheduler(self) -> Component:
        kubeconfig = self.workdir / "kubeconfigs" / "scheduler.kubeconfig"
        return self._add(
            "scheduler",
            [
                str(self.bindir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _component_kwok(self) -> Component:
        tls = self.pki.issue("kwok-kubelet-server", cn="kwok", server=True)
        config = self.workdir / "kwok.yaml"
        default_log = self.workdir / "podlogs" / "default.log"
        default_log.touch()
        # Every pod has a log (empty, unless a test gives it one with pod_log()): the product
        # reading the log of a pod nobody drives gets nothing, not an error.
        config.write_text(
            KWOK_STAGES.read_text()
            + "\n---\n"
            + json.dumps(
                {
                    "apiVersion": "kwok.x-k8s.io/v1alpha1",
                    "kind": "ClusterLogs",
                    "metadata": {"name": "lane-default"},
                    "spec": {"logs": [{"logsFile": str(default_log), "follow": True}]},
                }
            )
            + "\n"
        )
        port = self.ports["kwok"]
        env = dict(os.environ, HOME=str(self.workdir / "kwok-home"))  # no ~/.kwok/kwok.yaml
        return self._add(
            "kwok",
            [
                str(self.bindir / "kwok"),
                f"--config={config}",
                f"--kubeconfig={self.workdir / 'kubeconfigs' / 'kwok.kubeconfig'}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--node-ip=127.0.0.1",
                f"--node-port={port}",
                f"--server-address=127.0.0.1:{port}",
                f"--tls-cert-file={tls.cert}",
                f"--tls-private-key-file={tls.key}",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
                "--enable-crds=Logs",
            ],
            env,
        )

    def _alive(self) -> None:
        for comp in self.components.values():
            if comp.name not in self._down:
                comp.check_alive()

    # -- crashing and starting components ------------------------------------------------------

    def kill_component(self, name: str) -> None:
        """SIGKILL one component (a crash: no graceful shutdown); the others stay up.

        name: etcd, apiserver, controller-manager, scheduler or kwok."""
        self._down.add(name)
        self.components[name].kill()

    def start_component(self, name: str, timeout: float = 60.0) -> None:
        """Start a killed component again with the same flags, port, certificates and data, and
        wait until it answers (etcd /health, API server /readyz, controller manager and
        scheduler /healthz, kwok: every node Ready)."""
        comp = self._component(name)
        if comp.running:
            raise ClusterError(f"{name} is already running")
        comp.start()
        self._down.discard(name)
        ready: Callable[[], Any] = {
            "etcd": self._etcd_healthy,
            "apiserver": self._apiserver_ready,
            "controller-manager": lambda: self._healthz("controller-manager"),
            "scheduler": lambda: self._healthz("scheduler"),
            "kwok": lambda: self._nodes_ready(self.nodes),
        }[name]
        wait_until(f"{name} to answer", ready, timeout, alive=self._alive)

    def kill_apiserver(self) -> None:
        """SIGKILL the API server (a crash: no graceful shutdown); etcd and the rest stay up."""
        self.kill_component("apiserver")

    def start_apiserver(self, timeout: float = 60.0) -> None:
        """Start the API server (again: same port, certificates and etcd) and wait for /readyz."""
        self.start_component("apiserver", timeout)

    def restart_apiserver(self, timeout: float = 60.0) -> None:
        self.kill_apiserver()
        self.start_apiserver(timeout)

    def _apiserver_ready(self) -> bool:
        try:
            return self._raw("GET", "/readyz", text=True) == "ok"
        except (urllib.error.URLError, OSError):
            return False

    # -- etcd ----------------------------------------------------------------------------------

    def _etcd_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        client = self.pki.issue(
            "apiserver-etcd-client", cn="kube-apiserver-etcd-client", client=True
        )
        ctx.load_cert_chain(str(client.cert), str(client.key))
        return ctx

    def _etcd(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"https://127.0.0.1:{self.ports['etcd']}{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, context=self._etcd_ssl(), timeout=10) as resp:
            return json.loads(resp.read())

    def _etcd_healthy(self) -> bool:
        return self._etcd("/health").get("health") == "true"

    def etcd_revision(self) -> int:
        """etcd's current revision (what resourceVersions are made of)."""
        key = base64.b64encode(b"/registry/").decode()
        resp = self._etcd("/v3/kv/range", {"key": key, "limit": 1, "keys_only": True})
        return int(resp["header"]["revision"])

    def compact_etcd(self, revision: int | None = None) -> int:
        """Compact etcd's history up to `revision` (default: the current one) and return it.

        Watches and lists from a resourceVersion before it then get 410 Gone, once the API
        server's watch cache no longer holds it (start the API server again to drop that cache)."""
        revision = revision or self.etcd_revision()
        self._etcd("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    # -- clients -------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user kubernetes-admin in group system:masters)."""
        return self.workdir / "kubeconfigs" / "admin.kubeconfig"

    def kubeconfig_for(self, name: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig authenticating as `user` in `groups` by a client certificate (no RBAC
        is granted here: bind what the test needs, as admin)."""
        pair = self.pki.issue(f"user-{name}", cn=user, orgs=groups, client=True)
        path = self.workdir / "kubeconfigs" / f"{name}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "lane",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki.ca.cert),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate": str(pair.cert), "client-key": str(pair.key)},
                }
            ],
            "contexts": [{"name": "lane", "context": {"cluster": "lane", "user": user}}],
            "current-context": "lane",
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def client_for(self, kubeconfig: Path) -> Any:
        """A kubernetes.client.ApiClient for a kubeconfig (not shared with other callers)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        return client.ApiClient(configuration)

    def admin_client(self) -> Any:
        """A kubernetes.client.ApiClient authenticated as cluster admin (cached)."""
        with self._lock:
            if "admin" not in self._clients:
                self._clients["admin"] = self.client_for(self.kubeconfig)
            return self._clients["admin"]

    def user_client(self, user: str, groups: tuple[str, ...] = ()) -> Any:
        """An ApiClient for `user` (in `groups`), authenticated by a client certificate."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        return self.client_for(self.kubeconfig_for(f"user-{safe}", user, groups))

    def _raw(self, method: str, path: str, body: Any = None, *, text: bool = False) -> Any:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        admin = self.pki.issue("user-admin", cn="kubernetes-admin", client=True)
        ctx.load_cert_chain(str(admin.cert), str(admin.key))
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            raw = resp.read()
        return raw.decode() if text else json.loads(raw)

    def core_get(self, path: str) -> Any:
        return self._raw("GET", path)

    def _apply(self, path: str, obj: dict[str, Any]) -> None:
        """Create `obj` at collection `path` unless it exists."""
        try:
            self._raw("POST", path, obj)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise ClusterError(f"POST {path}: {exc.code} {exc.read().decode()}") from exc

    # -- setup steps ---------------------------------------------------------------------------

    def _install_kwok_api(self) -> None:
        """kwok's identity gets the rights its controllers use; Logs objects become an API."""
        rules = [
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "update"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch", "update"]},
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "verbs": ["get", "list", "watch", "delete", "patch", "update"],
            },
            {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch", "update"]},
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "verbs": ["create", "get", "list", "watch", "patch", "update"],
            },
            {
                "apiGroups": ["kwok.x-k8s.io"],
                "resources": ["logs"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["kwok.x-k8s.io"],
                "resources": ["logs/status"],
                "verbs": ["patch", "update"],
            },
        ]
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        self._apply(
            f"{rbac}/clusterroles",
            {"metadata": {"name": "lane:kwok-controller"}, "rules": rules},
        )
        self._apply(
            f"{rbac}/clusterrolebindings",
            {
                "metadata": {"name": "lane:kwok-controller"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "lane:kwok-controller",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "system:kwok-controller",
                    }
                ],
            },
        )
        # kwok.x-k8s.io/v1alpha1 Logs: which file a pod's containers "print" to (PodLog).
        self._apply(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            {
                "metadata": {"name": "logs.kwok.x-k8s.io"},
                "spec": {
                    "group": "kwok.x-k8s.io",
                    "scope": "Namespaced",
                    "names": {"plural": "logs", "singular": "logs", "kind": "Logs",
                              "listKind": "LogsList"},
                    "versions": [
                        {
                            "name": "v1alpha1",
                            "served": True,
                            "storage": True,
                            "subresources": {"status": {}},
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    ],
                },
            },
        )  # fmt: skip

        def established() -> bool:
            crd = self.core_get(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/logs.kwok.x-k8s.io"
            )
            conditions = crd.get("status", {}).get("conditions", [])
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        wait_until("the Logs CRD", established, 30, alive=self._alive)

    def _create_nodes(self, nodes: tuple[str, ...]) -> None:
        for name in nodes:
            self._apply(
                "/api/v1/nodes",
                {
                    "metadata": {
                        "name": name,
                        "annotations": {
                            KWOK_NODE_ANNOTATION: "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                        },
                    },
                },
            )

    def _nodes_ready(self, nodes: tuple[str, ...]) -> bool:
        items = self.core_get("/api/v1/nodes")["items"]
        ready = {
            n["metadata"]["name"]
            for n in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        }
        return set(nodes) <= ready

    def _default_sa_exists(self) -> bool:
        try:
            self.core_get("/api/v1/namespaces/default/serviceaccounts/default")
            return True
        except urllib.error.HTTPError:
            return False

    def _healthz(self, name: str) -> bool:
        ctx = ssl.create_default_context()
        # Their serving certificates are self-signed at start; /healthz is open to anyone.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.ports[name]}/healthz"
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                return resp.read() == b"ok"
        except (urllib.error.URLError, OSError):
            return False

    def _check_controllers(self) -> None:
        text = self.components["controller-manager"].log.read_text(errors="replace")
        missing = [c for c in REQUIRED_CONTROLLERS if f'"{c}"' not in text]
        if missing:
            raise ClusterError(
                f"kube-controller-manager did not start {', '.join(missing)}; see "
                f"{self.components['controller-manager'].log}"
            )

    # -- driving simulated pods ----------------------------------------------------------------

    def pod_log(
        self, namespace: str, pod: str, container: str | None = None, *, wait: float = 30.0
    ) -> PodLog:
        """Give a pod's container (None: every container of it) a log file and return it.

        From then on what PodLog.write appends is what `pods/log` serves for that container,
        `follow=True` included (kube-apiserver -> kwok's kubelet server -> the file). With `wait`
        (seconds, the default), returns only once the API server serves that very file, so no
        line written afterwards can be missed; the pod must be scheduled onto a node by then."""
        directory = self.workdir / "podlogs" / namespace / pod
        directory.mkdir(parents=True, exist_ok=True)
        log = PodLog(directory / f"{container or '_all'}.log")
        log.path.touch()
        if not wait:
            self._route_log(namespace, pod, container, log.path)
            return log
        # kwok learns of Logs objects through a watch. Route the container to a probe file
        # first and read it back through the API server, then route it to the real file and
        # read until the probe is gone: from then on kwok serves the real file.
        probe = PodLog(directory / f".probe-{container or '_all'}.log")
        marker = f"lane-probe-{time.monotonic_ns()}"
        probe.path.write_text("")
        probe.write(marker)
        deadline = time.monotonic() + wait
        self._route_log(namespace, pod, container, probe.path)
        self._wait_log(namespace, pod, container, lambda text: marker in text, deadline)
        self._route_log(namespace, pod, container, log.path)
        self._wait_log(namespace, pod, container, lambda text: marker not in text, deadline)
        probe.path.unlink()
        return log

    def _route_log(self, namespace: str, pod: str, container: str | None, path: Path) -> None:
        """Create or update the kwok Logs object `namespace/pod` so `container` reads `path`."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        custom = client.CustomObjectsApi(self.admin_client())
        entry: dict[str, Any] = {"logsFile": str(path), "follow": True}
        if container:
            entry["containers"] = [container]
        args = ("kwok.x-k8s.io", "v1alpha1", namespace, "logs")
        try:
            current = custom.get_namespaced_custom_object(*args, pod)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "Logs",
                "metadata": {"name": pod, "namespace": namespace},
                "spec": {"logs": [entry]},
            }
            custom.create_namespaced_custom_object(*args, body)
            return
        logs = [
            e
            for e in current.get("spec", {}).get("logs", [])
            if e.get("containers") != entry.get("containers")
        ]
        # A container's own entry comes before the pod-wide one (kwok takes the first match).
        if container:
            logs.insert(0, entry)
        else:
            logs.append(entry)
        current["spec"]["logs"] = logs
        custom.replace_namespaced_custom_object(*args, pod, current)

    def _wait_log(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        ok: Callable[[str], bool],
        deadline: float,
    ) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.admin_client())
        if container is None:  # the API server wants a name when a pod has several containers
            spec = core.read_namespaced_pod(pod, namespace).spec
            container = spec.containers[0].name

        def check() -> bool:
            return ok(core.read_namespaced_pod_log(pod, namespace, container=container))

        wait_until(
            f"kwok to serve the log file of {namespace}/{pod}",
            check,
            max(0.5, deadline - time.monotonic()),
            alive=self._alive,
        )

    def exit_pod(
        self, namespace: str, pod: str, exit_code: int, *, reason: str | None = None
    ) -> None:
        """Make every container of a pod exit with `exit_code` (kwok's pod-exit stage): at once
        when it runs, else as soon as it runs. Phase Succeeded for 0, Failed otherwise; `reason`
        overrides the containers' terminated reason (Completed / Error)."""
        from kubernetes import client

        annotations = {EXIT_CODE_ANNOTATION: str(int(exit_code))}
        if reason:
            annotations[EXIT_REASON_ANNOTATION] = reason
        client.CoreV1Api(self.admin_client()).patch_namespaced_pod(
            pod, namespace, {"metadata": {"annotations": annotations}}
        )

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every component this cluster started (reverse order); logs stay in workdir."""
        if self._stopped:
            return
        self._stopped = True
        for name in ("kwok", "scheduler", "controller-manager", "apiserver", "etcd"):
            comp = self.components.get(name)
            if comp is not None:
                comp.stop()
        for api in self._clients.values():
            with contextlib.suppress(Exception):
                api.close()
        self._clients.clear()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        """Where things are, for a failing test's message."""
        logs = ", ".join(str(c.log) for c in self.components.values())
        return f"kube lane {self.version} in {self.workdir}; component logs: {logs}"


@contextlib.contextmanager
def running_cluster(workdir: Path | str | None = None, **kwargs: Any) -> Iterator[Cluster]:
    cluster = Cluster.start(workdir, **kwargs)
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kube.cluster",
        description="Start the kube lane's control plane on loopback and keep it up until Ctrl-C.",
    )
    parser.add_argument("--workdir", help="work directory (default: a new temporary one)")
    parser.add_argument("--timeout", type=float, default=120.0, help="start-up timeout (s)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster = Cluster.start(args.workdir, timeout=args.timeout)
    except ClusterError as exc:
        print(f"kube lane: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"kube lane {cluster.version} up in {cluster.startup_seconds:.1f}s", file=sys.stderr)
        print(f"work dir {cluster.workdir} (component logs in logs/)", file=sys.stderr)
        print(f"export KUBECONFIG={cluster.kubeconfig}", file=sys.stderr)
        print(f"kubectl: {cluster.bindir / 'kubectl'}", file=sys.stderr)
        print(cluster.kubeconfig, flush=True)
        while not stop.wait(1.0):
            cluster._alive()
    except ClusterError as exc:
        print(f"kube lane: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
