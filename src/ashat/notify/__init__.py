"""Notifications: ``[[notify]]`` webhooks told of deployment state changes.

``config.py`` reads the targets from ``ashat.toml`` (pure); ``messages.py`` turns a
:class:`~ashat.workflow.models.Change` into the bytes sent and their signature (pure);
``delivery.py`` sends them in background threads with retries and backoff, and records a
delivery that failed as an audit event. Nothing here may fail or delay a deployment: the
ops layer attaches :func:`ashat.notify.delivery.Dispatcher.submit` as the workflow's
observer, which only queues.
"""
