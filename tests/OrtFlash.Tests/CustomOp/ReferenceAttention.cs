namespace OrtFlash.Tests.CustomOp;

/// <summary>
/// Naive attention in double precision, written from the op contract in DESIGN.md and sharing nothing with
/// the kernels: materialises each score row, masks, softmax, weighted sum.
/// </summary>
public static class ReferenceAttention
{
    public static double[] Compute(AttentionCase c)
    {
        var (batch, qHeads, qLen, headDim) = Dims4(c.QueryShape);
        var (_, kvHeads, kvLen, _) = Dims4(c.KeyShape);
        var vDim = c.ValueShape[^1];
        var scoresShape = c.Rank == 4 ? new[] { batch, qHeads, qLen, kvLen } : new[] { batch, qLen, kvLen };
        var scale = c.Scale ?? (headDim > 0 ? 1.0 / Math.Sqrt(headDim) : 1.0);
        var output = new double[batch * qHeads * qLen * vDim];
        var scores = new double[kvLen];
        var visible = new bool[kvLen];
        long group = kvHeads == 0 ? 1 : qHeads / kvHeads;

        for (long b = 0; b < batch; b++)
        {
            for (long h = 0; h < qHeads; h++)
            {
                long kvh = h / group;
                for (long i = 0; i < qLen; i++)
                {
                    double max = double.NegativeInfinity;
                    for (long j = 0; j < kvLen; j++)
                    {
                        double dot = 0;
                        for (long d = 0; d < headDim; d++)
                        {
                            dot += (double)c.Query[(((b * qHeads) + h) * qLen + i) * headDim + d] *
                                   c.Key[(((b * kvHeads) + kvh) * kvLen + j) * headDim + d];
                        }

                        double s = scale * dot;
                        if (c.Softcap > 0)
                        {
                            s = c.Softcap * Math.Tanh(s / c.Softcap);
                        }

                        var index = c.Rank == 4 ? new[] { b, h, i, j } : new[] { b, i, j };
                        if (c.Bias is not null)
                        {
                            // The contract adds the bias to the fp32 score in fp32: with large biases (−10000) that
                            // rounding is part of the result, exactly as in the unfused graph.
                            s = (float)((float)s + c.Bias[BroadcastIndex(c.BiasShape!, scoresShape, index)]);
                        }

                        bool keep = c.Keep is null || c.Keep[BroadcastIndex(c.KeepShape!, scoresShape, index)];
                        keep &= c.Causal switch
                        {
                            1 => j <= i,
                            2 => j <= i + kvLen - qLen,
                            _ => true,
                        };
                        visible[j] = keep && !double.IsNegativeInfinity(s);
                        scores[j] = s;
                        if (visible[j])
                        {
                            max = Math.Max(max, s);
                        }
                    }

                    var outRow = (((b * qHeads) + h) * qLen + i) * vDim;
                    if (double.IsNegativeInfinity(max))
                    {
                        // No visible key: the masked_rows policy.
                        double fill = c.MaskedRows == "nan" ? double.NaN : 0.0;
                        for (long e = 0; e < vDim; e++)
                        {
                            output[outRow + e] = fill;
                        }

                        continue;
                    }

                    double sum = 0;
                    for (long j = 0; j < kvLen; j++)
                    {
                        scores[j] = visible[j] ? Math.Exp(scores[j] - max) : 0.0;
                        sum += scores[j];
                    }

                    for (long e = 0; e < vDim; e++)
                    {
                        double acc = 0;
                        for (long j = 0; j < kvLen; j++)
                        {
                            if (scores[j] != 0)
                            {
                                acc += scores[j] * c.Value[(((b * kvHeads) + kvh) * kvLen + j) * vDim + e];
                            }
                        }

                        output[outRow + e] = acc / sum;
                    }
                }
            }
        }

        return output;
    }

    /// <summary>(B, H, S, D) of a rank-4 shape, or (N, 1, S, D) of a rank-3 one.</summary>
    public static (long, long, long, long) Dims4(long[] shape) =>
        shape.Length == 4 ? (shape[0], shape[1], shape[2], shape[3]) : (shape[0], 1, shape[1], shape[2]);

    /// <summary>Flat index into a tensor of <paramref name="shape"/> read broadcast to <paramref name="target"/>.</summary>
    public static long BroadcastIndex(long[] shape, long[] target, long[] index)
    {
        long flat = 0;
        int offset = target.Length - shape.Length;
        for (int axis = 0; axis < shape.Length; axis++)
        {
            long coordinate = shape[axis] == 1 ? 0 : index[axis + offset];
            flat = flat * shape[axis] + coordinate;
        }

        return flat;
    }
}
