"""Everything on a wire: the Device contract, back-ends, SunSpec maps, emulators, capture."""
