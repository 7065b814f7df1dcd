"""A fleet of engines on a Ray cluster (`lookahead run --ray`): the driver (driver.py) shards requests
over workers (worker.py) and streams results back; cluster.py connects to Ray.

>>> from lookahead.fleet.driver import fair_share
>>> fair_share(queued=10, in_flight=0, workers=2, shard_size=4)
4
"""
