"""Small pieces every layer uses: records without typing, the per-user cache and
directories, standard streams, the process state Python's start changes."""
