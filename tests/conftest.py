"""Settings shared by every test suite."""

# Import hypothesis here, in the main thread, before any test starts a thread: otherwise its pytest plugin
# imports it lazily at the end of the session, and pytest's assertion rewriter then parses it while other
# threads may still be importing too — CPython 3.11.7's ast module is not safe for that ("AST constructor
# recursion depth mismatch", seen once here with the kopf operator thread).
import hypothesis  # noqa: F401
