"""The S3 health probe's own call against the cluster's real S3 server (moto).

ListBuckets, signed and sent by botocore without a boto3 client
(:class:`hpcgate.server.transfer.s3.BucketLister`); its failures are in
``tests/unit/test_s3_probe.py``.
"""

from __future__ import annotations

from cluster_fixture import Cluster
from hpcgate.server.config import S3Config, Secret
from hpcgate.server.transfer.s3 import BucketLister


def test_the_probe_lists_the_buckets_of_the_real_store(cluster: Cluster) -> None:
    s3 = cluster.s3
    config = S3Config(
        endpoint=s3.endpoint,
        region=s3.region,
        access_key=Secret(value=s3.access_key),
        secret_key=Secret(value=s3.secret_key),
    )
    BucketLister(config, s3.endpoint).list_buckets()  # answers: no exception
