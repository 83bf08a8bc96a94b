"""Prefect flows: thin orchestration over the eoseg library (no pixel logic here).

Tasks are coarse (one per stage) and pass paths, not arrays; tile-level parallelism runs
on a Dask cluster whose scheduler address the tasks receive.
"""
