"""The shell: the `feedstore` CLI and the stage runner that the CLI and the Airflow DAG call. The only code that
imports stage packages and decides the order of compute and gates."""
