"""Modules imported on first use, and a fork in another thread meanwhile.

scopeledger imports some modules inside the call that first needs them
(start-up time, issue 18: ``_wait`` on the first ``wait=``, ``_filetickets``
on the first waiter, psutil for a v1 identity, ...). Python imports a module
holding a lock of that module's own until its code has run; a child forked
while another thread of its parent was inside such an import inherits that
lock held by a thread that does not exist in the child, and the child's own
first use of the module waits for it for ever (CPython does not reset these
locks after a fork). A ``Ledger`` call in the child then hangs whatever its
timeout.

So every import scopeledger makes inside a function is made holding
:data:`first_use` (``with first_use: from ._wait import ...``;
``tests/test_signals_forks.py`` checks every one, from the AST), and a fork
waits until no thread is inside one (an ``os.register_at_fork`` hook: an
import takes milliseconds), then lets it go in the parent and in the child.
Outside the library's own imports, the same hazard stays the program's: an
import of its own in another thread while it forks.
"""

from __future__ import annotations

import os
import threading

#: Held by a thread while it imports a module on first use (re-entrant: such
#: an import may make another). ``with first_use:`` around the import.
first_use = threading.RLock()

os.register_at_fork(before=first_use.acquire, after_in_parent=first_use.release,
                    after_in_child=first_use.release)
