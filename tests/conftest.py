"""Session fixtures of the real-component rig are plugins, so a test pays only for what it uses."""

pytest_plugins = ["rig.kube", "rig.kafka", "rig.airflow", "rig.sync", "rig.cluster"]
