"""The deploy files (systemd units, cron lines, logrotate, Prometheus rules), installed as
``autoid_lib.deploy`` (pyproject.toml's package-dir) so that ``autoid init --deploy DIR`` can
write them from an installed wheel. This folder holds no code."""
