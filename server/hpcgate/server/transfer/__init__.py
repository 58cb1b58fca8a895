"""Large transfers through S3, and long file operations as scheduler jobs.

* :mod:`.s3`: boto3 clients for a system's store (shared with the health probe);
* :mod:`.staging`: the per-user buckets, multipart uploads, presigned URLs,
  the server's records of staged transfers, and the sweep of expired uploads;
* :mod:`.records`: the values it records and hands out (manifests, plans,
  object views);
* :mod:`.scripts`: the batch scripts of the transfer jobs (``scripts/*.sh``);
* :mod:`.jobs`: submitting them (names, directives, working directory, logs);
* :mod:`.service`: the operations the Transfer servicer calls to start transfers;
* :mod:`.progress`: how a transfer stands (GetTransfer, WatchTransfer).
"""
