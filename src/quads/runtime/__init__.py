"""Using a packed model file: `quads.load` builds it as a ready module that predicts intents from audio
(`model`), and ONNX export of the student, float or with its codebooks rebuilt in the graph (`onnx_export`,
`onnx_codebook`). Nothing here imports training or the commands."""
