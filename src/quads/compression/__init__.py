"""The method's primitives and the file format: k-means codebooks on tensors (`codebook`), which tensors get
them (`spec`), the training-time quantizer (`quantize`), the packed model file (`packed`, `packed_reader`) and
what such a file may contain (`file_checks`). Nothing here imports training or the commands."""
