"""The provider-neutral core: discovery, run trackers, the poll schedule and the snapshot.

Nothing here knows Prometheus, HTTP or any one provider's types: it talks to the ``Provider``
protocol and publishes immutable ``Snapshot`` objects for the exposition side to read.
"""
