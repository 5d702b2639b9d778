"""Shared pytest set-up of the deployment checks (scripts/check-deploy)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs_bal: runs the bal binary (BAL_BIN); -m 'not needs_bal' runs the others alone",
    )
