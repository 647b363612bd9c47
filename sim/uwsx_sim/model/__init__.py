"""The backend model: the memory backend behind simulated links, with replication and failover.

``replication`` wraps the store (primary, lagging replicas, failover); ``client`` is what an
instance holds (a ``Backend`` whose calls cross its link); ``pubsub`` the subscription side of
it; ``open`` the ``sim://`` URL factory.
"""

from __future__ import annotations
