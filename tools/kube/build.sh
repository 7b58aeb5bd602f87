#!/usr/bin/env bash
# Builds the binaries of the kube test lane from the Go module proxy, into a cache outside the
# tree, only those that are missing:
#   kubernetes/  kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes)
#   etcd/        etcd (go.etcd.io/etcd/server/v3, through a main of our own)
#   kwok/        kwok (sigs.k8s.io/kwok)
# Each directory is a Go module whose go.mod/go.sum pin every version, so a build is reproducible.
#
# Usage: tools/kube/build.sh               build what is missing, print per-module build times;
#                                          the last line printed is the bin directory
#        tools/kube/build.sh --print-bin-dir   print the bin directory, build nothing
#
# Environment: KUBE_LANE_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/codexk8s/kube) holds one
# directory per version key (versions plus a hash of the go.mod/go.sum/sources/flags and of the Go
# version); KUBE_LANE_SERIAL=1 builds the three modules one after the other instead of at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
modules=(kubernetes etcd kwok)
declare -A binaries=(
  [kubernetes]="kube-apiserver kube-controller-manager kube-scheduler kubectl"
  [etcd]="etcd"
  [kwok]="kwok"
)

die() {
  echo "tools/kube/build.sh: $*" >&2
  exit 1
}

command -v go >/dev/null 2>&1 ||
  die "no 'go' on PATH: the kube lane builds its Kubernetes binaries from source and needs Go >= 1.26 (install Go, or put its bin directory on PATH)"

# Our modules only: no go.work from a parent directory, no toolchain switch, go.sum as committed.
export GOWORK=off GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0

gover="$(go env GOVERSION)"
case "$gover" in
  go1.2[6-9]* | go1.[3-9][0-9]*) ;;
  *) die "Go $gover is too old: k8s.io/kubernetes $(sed -n 's/^require k8s.io\/kubernetes //p' "$here/kubernetes/go.mod") needs Go >= 1.26" ;;
esac

# -s -w make the linker drop the symbol table and DWARF, so the compiler need not write DWARF
# at all (less work, a smaller GOCACHE).
goflags=(-trimpath -gcflags=all=-dwarf=false)

modversion() { # module dir, module path -> version required by that go.mod
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$here/$1/go.mod"
}
kube_version="$(modversion kubernetes k8s.io/kubernetes)"
etcd_version="$(modversion etcd go.etcd.io/etcd/server/v3)"
kwok_version="$(modversion kwok sigs.k8s.io/kwok)"
[[ -n $kube_version && -n $etcd_version && -n $kwok_version ]] || die "cannot read the pinned versions from $here/*/go.mod"

seconds_since() { # start in ns -> elapsed seconds with one decimal
  local ds=$((($(date +%s%N) - $1) / 100000000))
  echo "$((ds / 10)).$((ds % 10))"
}

ldflags_kubernetes() {
  local v="$kube_version" minor major date
  major="${v#v}" && major="${major%%.*}"
  minor="${v#v*.}" && minor="${minor%%.*}"
  # The module's publication time, not now: the same inputs give the same binaries.
  date="$(cd "$here/kubernetes" && go list -m -json k8s.io/kubernetes | sed -n 's/^\s*"Time": "\(.*\)",\?$/\1/p')"
  local flags=(-s -w)
  local pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    flags+=(
      -X "$pkg.gitVersion=$v" -X "$pkg.gitMajor=$major" -X "$pkg.gitMinor=$minor"
      -X "$pkg.gitTreeState=clean" -X "$pkg.buildDate=${date:-1970-01-01T00:00:00Z}"
      -X "$pkg.gitCommit=" # the proxy does not tell the release's commit; empty beats $Format:%H$
    )
  done
  echo "${flags[*]}"
}

ldflags_for() {
  case "$1" in
    kubernetes) ldflags_kubernetes ;;
    etcd) echo "-s -w" ;; # etcd's version is a constant of go.etcd.io/etcd/api/v3/version
    kwok) echo "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version#v}" ;;
  esac
}

# The key changes with anything that changes the binaries: versions, sums, our sources, flags, Go.
inputs_hash="$(
  cd "$here" && {
    cat ./*/go.mod ./*/go.sum ./*/*.go
    for mod in "${modules[@]}"; do ldflags_for "$mod"; done
    echo "$gover CGO_ENABLED=$CGO_ENABLED ${goflags[*]}"
  } | sha256sum | cut -c1-10
)"
key="${kube_version}-etcd${etcd_version#v}-kwok${kwok_version#v}-${inputs_hash}"
cache="${KUBE_LANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codexk8s/kube}"
bindir="$cache/$key/bin"

if [[ ${1-} == --print-bin-dir ]]; then
  echo "$bindir"
  exit 0
fi
[[ $# -eq 0 ]] || die "unknown argument: $1 (see the header of this script)"

missing_of() {
  local b out=()
  for b in ${binaries[$1]}; do
    [[ -x $bindir/$b ]] || out+=("$b")
  done
  echo "${out[*]-}"
}

# One `go build` per module: the packages the four Kubernetes commands share are compiled once.
build_module() {
  local mod="$1" start
  start=$(date +%s%N)
  tmp="$(mktemp -d "$bindir/.build-$mod.XXXXXX")"
  # Runs in a subshell of its own: a stopped or failed build leaves no temporary directory.
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 143' TERM
  local targets=(tool)
  [[ $mod == etcd ]] && targets=(.)
  if ! (cd "$here/$mod" && go build "${goflags[@]}" -ldflags "$(ldflags_for "$mod")" -o "$tmp/" "${targets[@]}") \
    >"$bindir/../build-$mod.log" 2>&1; then
    echo "FAILED: go build of tools/kube/$mod; its output ($bindir/../build-$mod.log):" >&2
    tail -n 40 "$bindir/../build-$mod.log" >&2
    return 1
  fi
  # One build links its binaries one after the other: tell when each was ready.
  local b ready=()
  for b in ${binaries[$mod]}; do
    [[ -x $tmp/$b ]] || {
      echo "FAILED: tools/kube/$mod built no $b" >&2
      return 1
    }
    ready+=("$b@$(($(stat -c %Y "$tmp/$b") - start / 1000000000))s")
    mv -f "$tmp/$b" "$bindir/$b"
  done
  printf '  %-10s %6ss  %s\n' "$mod" "$(seconds_since "$start")" "${ready[*]}"
}

mkdir -p "$bindir"
# One build at a time per cache directory (two test runs starting at once).
exec 9>"$bindir/../.lock"
flock 9

todo=()
for mod in "${modules[@]}"; do
  [[ -z $(missing_of "$mod") ]] || todo+=("$mod")
done

total_start=$(date +%s%N)
if ((${#todo[@]} == 0)); then
  echo "kube lane binaries up to date ($key)"
else
  echo "building ${todo[*]} with $gover, GOMAXPROCS=${GOMAXPROCS:-$(nproc)} into $bindir"
  # The modules are built at the same time: the Kubernetes build alone leaves cores idle in its
  # long single-threaded link steps, which the two small builds fill.
  # Job control: each module's build gets its own process group, so that a failure can stop
  # the other builds (go and its compilers) instead of waiting minutes for them.
  set -m
  declare -A pid_of=()
  for mod in "${todo[@]}"; do
    if [[ ${KUBE_LANE_SERIAL-} == 1 ]]; then
      (build_module "$mod") || die "build failed (see above)"
    else
      (build_module "$mod") &
      pid_of[$!]=$mod
    fi
  done
  while ((${#pid_of[@]})); do
    finished=""
    if ! wait -n -p finished "${!pid_of[@]}"; then
      for pid in "${!pid_of[@]}"; do
        [[ $pid == "$finished" ]] || kill -TERM -- "-$pid" 2>/dev/null || true
      done
      wait
      die "build of tools/kube/${pid_of[$finished]:-?} failed (see above); stopped the others"
    fi
    unset "pid_of[$finished]"
  done
  set +m
  printf '  %-10s %6ss\n' total "$(seconds_since "$total_start")"
  # Versions recorded for the lane (and for people) beside the binaries.
  printf 'kubernetes %s\netcd %s\nkwok %s\ngo %s\n' "$kube_version" "$etcd_version" "$kwok_version" \
    "$gover" >"$bindir/../versions.txt"
fi
echo "$bindir"
