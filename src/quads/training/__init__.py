"""Training a student: corpora to in-memory or sharded example sets and their batch order (`experiment`,
`batches`, `shards`), the frozen teacher's cached frames (`teacher_cache`), the loss terms (`losses`), the
recipes as stage lists (`recipes`), stage 0 (`pretune`), the loop (`loop`), its checkpoints, inference
helpers and process group, and the dry-run plan (`run_plan`)."""
