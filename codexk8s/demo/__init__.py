"""What `codexk8s demo` ships: a captured GitHub `issues.labeled` payload (from the MIT-licensed
`@octokit/webhooks-examples` package, as GitHub sent it) and the scripted agent the demo runs."""
