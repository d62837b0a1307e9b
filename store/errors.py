"""The one error class for bad input, raised by every package (the CLI turns it into one `error:` line and exit
code 2, the UI into one st.error). A leaf module: `sae` may import it although it imports nothing else of `store`."""


class InputError(ValueError):
    """Something the user asked for does not exist or is malformed."""
