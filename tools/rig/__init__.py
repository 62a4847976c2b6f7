"""The real-component test rig: kube-apiserver + etcd, Kafka, Airflow 2.x and 3.x on loopback.

Everything is provisioned from the package registries into a cache keyed by version
(`rig.cache`), started lazily by pytest session fixtures (`tests/conftest.py`), and stopped at
the end of the session, on failure and on Ctrl-C (`rig.procs`).
"""
