"""Numeric building blocks of the quantization analysis (pure numpy, plain data in and out).

- :mod:`.observers`: streaming, exactly mergeable min/max and histogram observers;
- :mod:`.ranges`: clipping ranges (MinMax, Percentile, Entropy/KL, MSE) from an observer;
- :mod:`.qparams`: schemes, scale/zero-point from a range, quantize/dequantize;
- :mod:`.integer`: bit-exact int8 matmul and int32 -> int8 requantization;
- :mod:`.ibert`: I-BERT integer-only exp/Softmax/GELU/sqrt/LayerNorm;
- :mod:`.metrics`: error statistics (SQNR, cosine, moments, histogram) of a tensor pair.
"""
