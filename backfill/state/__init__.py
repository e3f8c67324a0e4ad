"""The state file (ledger, batches, cursors, runs), its lock, and the rules that use them."""
