"""The real Pulumi CLI in the lab, with stand-ins for what cannot be built here.

Real: the `pulumi` CLI and its engine (built from its Go module by
scripts/build-pulumi), the Python SDK and the provider SDKs the program
imports, state, config, secrets, plans and diffs.

Stand-ins (test infrastructure, never used by a user):
- `bin/pulumi-language-python` (launcher.py): runs the program with the
  Python SDK's own language server, the one the Automation API uses;
- the `command` and `cloudflare` resource providers (providers/): gRPC
  servers that speak the engine's provider protocol, check inputs against the
  installed SDKs' schemas, follow the real providers' diff rules, run
  commands over real SSH and publish records to the lab's Knot.

The real language host and providers are Go programs whose modules cannot be
fetched or built on these machines (see README, "The real engine in the lab").
"""
