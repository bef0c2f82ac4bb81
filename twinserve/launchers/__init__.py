"""How twinserve starts each component natively: command, environment, ports, readiness."""
