"""Device emulators: real servers on real transports, backed by a Plant, with fault injection."""
