"""The pace a request body must keep (``http/middleware.py`` ``UploadPace``): one place for
the defaults the agents, ``ashat serve`` and their command lines share. No imports, so
the CLI can read them without loading the server stack."""

DEFAULT_MIN_UPLOAD_RATE = 16 * 1024  # bytes per second, averaged once the grace has passed
DEFAULT_UPLOAD_GRACE_S = 30.0  # seconds a body may take before the rate is asked of it
MAX_UPLOAD_GRACE_S = 3600.0
