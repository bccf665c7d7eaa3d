"""Over-the-air delivery: the TUF repository (publisher side) and the device client.

repo_state.py / repository.py / keystore.py / server.py write and serve a static TUF repository of bundles;
delta.py makes and applies bundle patches; slots.py, health.py and device.py are the device side.
"""
