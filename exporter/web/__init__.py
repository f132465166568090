"""The exporter's HTTP side: routes, pages and the listening socket."""
