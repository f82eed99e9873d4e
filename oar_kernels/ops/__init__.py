"""The drop-in public ops: input checks at the boundary, then a Triton or torch backend."""
