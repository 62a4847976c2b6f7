"""The only modules that talk to third-party clients: airflow (httpx), kafka (aiokafka), kube."""
