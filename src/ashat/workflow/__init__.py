"""The deployment workflow: the state machine and the services behind each verb.

Nothing here opens a socket or a file. Services receive a store and (later) a transport
through the narrow Protocols in :mod:`ashat.workflow.ports`, so the CLI and the HTTP API
share them and tests drive them without servers.
"""
