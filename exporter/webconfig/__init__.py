"""``--web.config.file``: TLS, basic auth and extra response headers for the HTTP endpoints.

The file uses the Prometheus exporter-toolkit web configuration format. The package is split by
concern: ``schema`` (what the file may say), ``files`` (reading it and the files it names),
``tls`` (the SSLContext), ``loader`` (one load), ``auth`` (credentials and the middleware) and
``watcher`` (reloading while the server runs). Error messages and reprs never contain password
hashes or key material, because they end up in logs and in ``--check-config`` output.
"""

from exporter.webconfig.auth import WWW_AUTHENTICATE, Authenticator, Verdict, auth_middleware
from exporter.webconfig.errors import WebConfigError
from exporter.webconfig.loader import WebConfig, load_web_config
from exporter.webconfig.watcher import WebConfigWatcher

__all__ = [
    "WWW_AUTHENTICATE",
    "Authenticator",
    "Verdict",
    "WebConfig",
    "WebConfigError",
    "WebConfigWatcher",
    "auth_middleware",
    "load_web_config",
]
