namespace OrtFlash.Tests.Rewriter.Support;

/// <summary>
/// The com.ortflash::FlashAttention contract computed plainly in double precision, to check a
/// rewritten graph without the native op. Keys hidden by keep, causal or a −inf bias are excluded;
/// a row with no visible key yields masked_rows ("zero" → 0, "nan" → NaN).
/// </summary>
internal static class ReferenceAttention
{
    public static TestTensor Compute(TestTensor q, TestTensor k, TestTensor v, TestTensor? bias, TestTensor? keep,
                                     float scale, long causal, float softcap, string maskedRows)
    {
        var rank = q.Shape.Length;
        long B = q.Shape[0], Hq = rank == 4 ? q.Shape[1] : 1, Sq = q.Shape[^2], D = q.Shape[^1];
        long Hkv = rank == 4 ? k.Shape[1] : 1, Skv = k.Shape[^2], Dv = v.Shape[^1];
        var full = rank == 4 ? new[] { B, Hq, Sq, Skv } : new[] { B, Sq, Skv };
        scale = float.IsNaN(scale) ? 1 / MathF.Sqrt(D) : scale; // absent: the op's 1/√D default
        var output = new float[B * Hq * Sq * Dv];
        var scores = new double[Skv];
        var visible = new bool[Skv];
        for (long b = 0; b < B; b++)
        {
            for (long h = 0; h < Hq; h++)
            {
                var kvHead = h / (Hq / Hkv);
                for (long i = 0; i < Sq; i++)
                {
                    var any = false;
                    for (long j = 0; j < Skv; j++)
                    {
                        double s = 0;
                        for (long d = 0; d < D; d++)
                        {
                            s += (double)q.Data[((b * Hq + h) * Sq + i) * D + d] * k.Data[((b * Hkv + kvHead) * Skv + j) * D + d];
                        }

                        // The contract: scores, softcap and bias in fp32.
                        var score = (float)(s * scale);
                        if (softcap > 0)
                        {
                            score = (float)(softcap * Math.Tanh(score / softcap));
                        }

                        long[] index = rank == 4 ? [b, h, i, j] : [b, i, j];
                        if (bias is not null)
                        {
                            score += bias.Data[Broadcast(bias.Shape, full, index)];
                        }

                        s = score;

                        var shown = !double.IsNegativeInfinity(s);
                        if (keep is not null && keep.Data[Broadcast(keep.Shape, full, index)] == 0)
                        {
                            shown = false;
                        }

                        if ((causal == 1 && j > i) || (causal == 2 && j > i + Skv - Sq))
                        {
                            shown = false;
                        }

                        scores[j] = s;
                        visible[j] = shown;
                        any |= shown;
                    }

                    var row = ((b * Hq + h) * Sq + i) * Dv;
                    if (!any)
                    {
                        for (long d = 0; d < Dv; d++)
                        {
                            output[row + d] = maskedRows == "zero" ? 0 : float.NaN;
                        }

                        continue;
                    }

                    var max = double.NegativeInfinity;
                    for (long j = 0; j < Skv; j++)
                    {
                        if (visible[j])
                        {
                            max = Math.Max(max, scores[j]);
                        }
                    }

                    double sum = 0;
                    for (long j = 0; j < Skv; j++)
                    {
                        scores[j] = visible[j] ? Math.Exp(scores[j] - max) : 0;
                        sum += scores[j];
                    }

                    for (long d = 0; d < Dv; d++)
                    {
                        double acc = 0;
                        for (long j = 0; j < Skv; j++)
                        {
                            acc += scores[j] * v.Data[((b * Hkv + kvHead) * Skv + j) * Dv + d];
                        }

                        output[row + d] = (float)(acc / sum);
                    }
                }
            }
        }

        long[] shape = rank == 4 ? [B, Hq, Sq, Dv] : [B, Sq, Dv];
        return new TestTensor(q.Type, shape, output);
    }

    /// <summary>The flat index into a tensor of <paramref name="shape"/> broadcast to <paramref name="full"/>.</summary>
    private static long Broadcast(long[] shape, long[] full, long[] index)
    {
        long flat = 0;
        var offset = full.Length - shape.Length;
        for (var axis = 0; axis < shape.Length; axis++)
        {
            var i = shape[axis] == 1 ? 0 : index[axis + offset];
            flat = flat * shape[axis] + i;
        }

        return flat;
    }
}
