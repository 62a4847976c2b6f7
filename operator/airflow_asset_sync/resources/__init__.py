"""Pure builders: a validated spec in, plain Kubernetes object dicts out. No I/O here.

Why plain dicts rather than `kubernetes.client` models: dicts compare equal in tests, go
straight into a server-side apply patch, and keep the kubernetes client confined to
`clients.kube` (the only module that imports it).

Modules:
- `naming`: child names, labels, env variable names, mount paths and ports: the contract
  the operator and the worker share (the worker imports it to read its credentials back).
- `credentials`: every Secret key a spec references, with the env name or file it becomes.
- `rbac`: the worker's ServiceAccount, Role and RoleBinding (and the operator's own rules).
- `deployment`: the worker Deployment.
"""
