using System.Globalization;
using OrtFlash.GraphRewriter.Graph;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;
using static OrtFlash.Tests.Rewriter.Support.ModelBuilder;

namespace OrtFlash.Tests.Rewriter.Fuzz;

/// <summary>
/// Builds a random but valid attention graph from a seed by independent choices: layout, key transpose, scale, masks,
/// Softmax and what wraps it, head repeat, value product, and now and then one ingredient that makes fusing it wrong.
/// The same seed always gives the same graph and description.
/// </summary>
internal sealed class AttentionGraphGenerator
{
    private const float FloatMin = float.MinValue;

    private static readonly (long S, long T)[] CrossLengths = [(1, 1), (4, 4), (5, 9), (7, 3), (3, 6), (2, 5), (6, 2)];
    private static readonly long[] SelfLengths = [1, 3, 4, 6, 7];

    private readonly Random _r;
    private readonly ModelBuilder _b = new(17);
    private readonly List<string> _parts = [];
    private readonly List<FuzzInput> _inputs = [];
    private readonly DataType _type;
    private DataType _scoresType;
    private readonly bool _rank4;

    // Whether the scores are 4-D where masks are applied: the layout's rank, or 4 on a (B, H, S, T) view of 3-D scores.
    private bool _scores4;
    private string _keyLength;
    private bool _past;
    private readonly long _heads;
    private readonly long _headDim;
    private int _masks;
    private long _queryLengthAxis;
    private bool _quantizingFill;
    private bool _perHeadScale;

    private AttentionGraphGenerator(Random random)
    {
        _r = random;
        _type = Chance(0.1) ? DataType.Float16 : DataType.Float;
        _scoresType = _type;
        _rank4 = !Chance(0.2);
        _scores4 = _rank4;
        _keyLength = Chance(0.3) ? "S" : "T";
        _heads = Pick(2L, 4L);
        _headDim = Pick(8L, 16L);
    }

    private enum Layout
    {
        HeadsFirst,
        Flat,
        SplitHeads,
        SequenceFirstEinsum,
    }

    private enum KeyForm
    {
        Transposed,
        HeadSplitMerged,
        ReshapedRank3,
        Einsum,
    }

    private enum ScaleForm
    {
        None,
        DivideScores,
        MultiplyScores,
        Query,
        QueryAndKey,
        QueryBeforeHeadSplit,
    }

    public static FuzzCase Generate(int seed) => new AttentionGraphGenerator(new Random(seed)).Build(seed);

    private bool Chance(double p) => _r.NextDouble() < p;

    private T Pick<T>(params T[] choices) => choices[_r.Next(choices.Length)];

    /// <summary>A scalar constant in the type of the scores at this point of the graph.</summary>
    private string Scalar(float value) => _b.Scalar(value, _scoresType);

    /// <summary>
    /// A scale constant: mostly a scalar, sometimes a 1-element tensor of rank 1 or of the scores' rank, now and then a
    /// per-head (1, H, 1, 1) tensor (equal values, or different ones, which no single scale reproduces).
    /// </summary>
    private string ScaleConstant(float value, bool perHeadAllowed = false)
    {
        var roll = _r.NextDouble();
        if (roll < 0.75)
        {
            return Scalar(value);
        }

        if (roll < 0.9 || !perHeadAllowed || !_rank4)
        {
            long[] dims = Chance(0.5) ? [1] : _rank4 ? [1, 1, 1, 1] : [1, 1, 1];
            _parts.Add($"scale tensor ({string.Join(",", dims)})");
            return _b.Floats(dims, [value], _scoresType);
        }

        var equal = Chance(0.5);
        var values = Enumerable.Range(0, (int)_heads).Select(h => equal || h == 0 ? value : value * (1 + 0.5f * h)).ToArray();
        _parts.Add(equal ? "scale tensor per head, all equal" : "scale tensor per head, different values");
        _perHeadScale |= !equal;
        return _b.Floats([1, _heads, 1, 1], values, _scoresType);
    }

    private static string Describe(float value) => value switch
    {
        float.NegativeInfinity => "-inf",
        FloatMin => "finfo.min",
        _ => value.ToString("G6", CultureInfo.InvariantCulture),
    };

    private string Entry => _scores4 ? "B" : "N";

    private FuzzCase Build(int seed)
    {
        var layout = !_rank4 ? Layout.Flat : _r.NextDouble() switch { < 0.4 => Layout.SplitHeads, < 0.52 => Layout.SequenceFirstEinsum, _ => Layout.HeadsFirst };
        if (layout == Layout.HeadsFirst && Chance(0.2))
        {
            // A KV cache: S new keys after T cached ones, K = T + S in all.
            _past = true;
            _keyLength = "K";
        }

        var kvHeads = _heads;
        var repeat = false;
        if (_rank4 && layout != Layout.SequenceFirstEinsum && Chance(0.25))
        {
            kvHeads = _heads == 4 ? Pick(1L, 2L) : 1;
            repeat = kvHeads != 1 || Chance(0.7);
        }

        var keyForm = layout == Layout.SequenceFirstEinsum ? KeyForm.Einsum
            : !_rank4 ? (Chance(0.2) ? KeyForm.Einsum : KeyForm.Transposed)
            : kvHeads != _heads && !repeat ? KeyForm.Transposed
            : Pick(KeyForm.Transposed, KeyForm.Transposed, KeyForm.Transposed, KeyForm.Einsum,
                   repeat ? KeyForm.Transposed : KeyForm.ReshapedRank3, layout == Layout.SplitHeads && !repeat ? KeyForm.HeadSplitMerged : KeyForm.Transposed);
        var valueEinsum = layout == Layout.SequenceFirstEinsum || ((kvHeads == _heads || repeat) && Chance(0.15));
        // (B, S, H, D) operands as Keras' MultiHeadAttention (via tf2onnx) or torch einsum write them.
        var keras = layout == Layout.SequenceFirstEinsum && Chance(0.5);
        _parts.Add(_type == DataType.Float16 ? "float16" : "float32");
        _parts.Add($"layout {layout} (Hq {(_rank4 ? _heads : 1)}, Hkv {(_rank4 ? kvHeads : 1)}{(kvHeads != _heads ? repeat ? ", repeated Unsqueeze→Expand→Reshape" : ", broadcast" : "")}, D {_headDim}, keys {_keyLength})");
        _parts.Add($"key {keyForm}");

        // Scale: value and placement.
        var inverseRoot = 1 / MathF.Sqrt(_headDim);
        var scaleForm = Pick(ScaleForm.None, ScaleForm.DivideScores, ScaleForm.DivideScores, ScaleForm.MultiplyScores, ScaleForm.MultiplyScores,
                             ScaleForm.Query, ScaleForm.QueryAndKey, layout == Layout.SplitHeads ? ScaleForm.QueryBeforeHeadSplit : ScaleForm.DivideScores);
        var scale = scaleForm == ScaleForm.None ? 1 : Chance(0.7) ? inverseRoot : Pick(0.3f, 0.125f, 1.7f, scaleForm == ScaleForm.QueryAndKey ? 0.5f : -0.5f);
        var shapeDerived = _type == DataType.Float && scaleForm is not (ScaleForm.None or ScaleForm.QueryBeforeHeadSplit) && scale == inverseRoot && Chance(0.35);
        var mustRefuse = Chance(0.12) ? Pick("probabilities are a graph output", "Softmax over another axis", "scale is a graph input",
                                              "scores have a second consumer", "Dropout in training mode") : null;
        if (mustRefuse == "scale is a graph input")
        {
            scaleForm = ScaleForm.MultiplyScores;
            shapeDerived = false;
        }

        // Query, key, value in (B, H, S, D) or (N, S, D).
        string q, k, v;
        string? kt = null;
        var kLengthSource = ("", 0L);
        if (layout == Layout.SplitHeads)
        {
            var qProj = Input("q_proj", _type, ["B", "S", _heads * _headDim], [AxisRole.Other, AxisRole.Other, AxisRole.Other], InputContent.Random);
            if (scaleForm == ScaleForm.QueryBeforeHeadSplit)
            {
                qProj = _b.Node("Mul", [qProj, Scalar(scale)]);
            }

            q = _b.Node("Transpose", [_b.Node("Reshape", [qProj, _b.Ints(0, 0, _heads, _headDim)])], Ints("perm", 0, 2, 1, 3));
            var kProj = Input("k_proj", _type, ["B", _keyLength, kvHeads * _headDim], [AxisRole.Other, AxisRole.Other, AxisRole.Other], InputContent.Random);
            var kSplit = _b.Node("Reshape", [kProj, _b.Ints(0, 0, kvHeads, _headDim)]);
            kLengthSource = (kProj, 1);
            if (keyForm == KeyForm.HeadSplitMerged)
            {
                kt = _b.Node("Transpose", [kSplit], Ints("perm", 0, 2, 3, 1));
                k = "";
            }
            else
            {
                k = _b.Node("Transpose", [kSplit], Ints("perm", 0, 2, 1, 3));
            }

            var vProj = Input("v_proj", _type, ["B", _keyLength, kvHeads * _headDim], [AxisRole.Other, AxisRole.Other, AxisRole.Other], InputContent.Random);
            v = _b.Node("Transpose", [_b.Node("Reshape", [vProj, _b.Ints(0, 0, kvHeads, _headDim)])], Ints("perm", 0, 2, 1, 3));
        }
        else if (layout == Layout.SequenceFirstEinsum)
        {
            AxisRole[] others = [AxisRole.Other, AxisRole.Other, AxisRole.Other, AxisRole.Other];
            q = Input("q", _type, ["B", "S", _heads, _headDim], others, InputContent.Random);
            k = Input("k", _type, ["B", _keyLength, _heads, _headDim], others, InputContent.Random);
            v = Input("v", _type, ["B", _keyLength, _heads, _headDim], others, InputContent.Random);
        }
        else if (_rank4)
        {
            q = Input("q", _type, ["B", _heads, "S", _headDim], [AxisRole.Other, AxisRole.Other, AxisRole.Other, AxisRole.Other], InputContent.Random);
            AxisRole[] others = [AxisRole.Other, AxisRole.Other, AxisRole.Other, AxisRole.Other];
            if (_past)
            {
                var axis = Pick(2L, -2L);
                k = _b.Node("Concat", [Input("past_key", _type, ["B", kvHeads, "T", _headDim], others, InputContent.Random),
                    Input("k", _type, ["B", kvHeads, "S", _headDim], others, InputContent.Random)], Int("axis", axis));
                v = _b.Node("Concat", [Input("past_value", _type, ["B", kvHeads, "T", _headDim], others, InputContent.Random),
                    Input("v", _type, ["B", kvHeads, "S", _headDim], others, InputContent.Random)], Int("axis", axis));
                if (Chance(0.5))
                {
                    k = _b.Rename(k, "present_key");
                    v = _b.Rename(v, "present_value");
                    _b.Output(k, _type);
                    _b.Output(v, _type);
                }

                _parts.Add("KV cache: Concat(past, new)");
            }
            else
            {
                k = Input("k", _type, ["B", kvHeads, _keyLength, _headDim], others, InputContent.Random);
                v = Input("v", _type, ["B", kvHeads, _keyLength, _headDim], others, InputContent.Random);
            }
        }
        else
        {
            q = Input("q", _type, ["N", "S", _headDim], [AxisRole.Other, AxisRole.Other, AxisRole.Other], InputContent.Random);
            k = Input("k", _type, ["N", _keyLength, _headDim], [AxisRole.Other, AxisRole.Other, AxisRole.Other], InputContent.Random);
            v = Input("v", _type, ["N", _keyLength, _headDim], [AxisRole.Other, AxisRole.Other, AxisRole.Other], InputContent.Random);
        }

        if (k.Length > 0)
        {
            kLengthSource = (k, _rank4 && layout != Layout.SequenceFirstEinsum ? 2 : 1);
        }

        _queryLengthAxis = _rank4 && layout != Layout.SequenceFirstEinsum ? 2 : 1;

        if (repeat)
        {
            // Contiguous (transformers' repeat_kv), or interleaved, which the op's head grouping does not read.
            var interleaved = Chance(0.25);
            _parts.Add(interleaved ? "heads repeated interleaved (Unsqueeze(1))" : "heads repeated contiguously (Unsqueeze(2))");
            k = RepeatHeads(k, kvHeads, interleaved);
            v = RepeatHeads(v, kvHeads, interleaved);
        }

        // Scale factors on the query (and key) before the product; shape-derived ones read the head dim from Shape(q).
        string Factor(float value) => shapeDerived
            ? (value == inverseRoot ? _b.Node("Div", [_b.Scalar(1), RootOfHeadDim(q)]) : _b.Node("Sqrt", [_b.Node("Div", [_b.Scalar(1), RootOfHeadDim(q)])]))
            : ScaleConstant(value);
        string? keyFactor = null;
        var qScaled = q;
        if (scaleForm == ScaleForm.Query)
        {
            qScaled = Chance(0.5) ? _b.Node("Mul", [q, Factor(scale)]) : _b.Node("Div", [q, shapeDerived ? RootOfHeadDim(q) : Scalar(1 / scale)]);
        }
        else if (scaleForm == ScaleForm.QueryAndKey)
        {
            var root = MathF.Sqrt(scale);
            keyFactor = Factor(root);
            qScaled = _b.Node("Mul", [q, keyFactor]);
        }

        // Scores.
        string scores;
        if (keyForm == KeyForm.Einsum)
        {
            var kIn = keyFactor is null ? k : _b.Node("Mul", [k, keyFactor]);
            var swapped = keras || Chance(0.3);
            var equation = layout == Layout.SequenceFirstEinsum ? (keras ? "aecd,abcd->acbe" : swapped ? "bkhd,bqhd->bhqk" : "bqhd,bkhd->bhqk")
                : _rank4 ? (swapped ? "bhkd,bhqd->bhqk" : "bhqd,bhkd->bhqk") : (swapped ? "nkd,nqd->nqk" : "nqd,nkd->nqk");
            scores = _b.Node("Einsum", swapped ? [kIn, qScaled] : [qScaled, kIn], Str("equation", equation));
        }
        else
        {
            if (kt is null)
            {
                var kIn = keyFactor is not null && Chance(0.5) ? _b.Node("Mul", [k, keyFactor]) : k;
                var factored = kIn != k;
                kt = keyForm == KeyForm.ReshapedRank3 ? ReshapedTranspose(kIn) : _b.Node("Transpose", [kIn], Ints("perm", _rank4 ? [0, 1, 3, 2] : [0, 2, 1]));
                if (keyFactor is not null && !factored)
                {
                    kt = _b.Node("Mul", [kt, keyFactor]);
                }
            }
            else if (keyFactor is not null)
            {
                kt = _b.Node("Mul", [kt, keyFactor]);
            }

            scores = _b.Node("MatMul", [qScaled, kt]);
        }

        if (scaleForm is ScaleForm.DivideScores or ScaleForm.MultiplyScores && mustRefuse is null && Chance(0.06))
        {
            // A mask added before the scale is scaled with the scores: the op's bias would have to be scaled too.
            _parts.Add("mask added before the scale:");
            scores = FloatMask(scores);
        }

        switch (scaleForm)
        {
            case ScaleForm.DivideScores when Chance(0.05):
                // c / s is not a scale.
                scores = _b.Node("Div", [Scalar(1 / scale), scores]);
                _parts.Add("Div(c, scores), not a scale");
                break;
            case ScaleForm.DivideScores:
                scores = _b.Node("Div", [scores, shapeDerived ? RootOfHeadDim(q) : ScaleConstant(1 / scale, perHeadAllowed: true)]);
                break;
            case ScaleForm.MultiplyScores:
                var factor = mustRefuse == "scale is a graph input"
                    ? Input("scale", _type, [], [], InputContent.Scalar, fill: 0.5f)
                    : shapeDerived ? Factor(scale) : ScaleConstant(scale, perHeadAllowed: true);
                scores = Chance(0.5) ? _b.Node("Mul", [scores, factor]) : _b.Node("Mul", [factor, scores]);
                break;
        }

        if (layout != Layout.SequenceFirstEinsum && Chance(0.08))
        {
            // torch.baddbmm(zeros, q, kᵀ, beta=1, alpha) (GPT-NeoX): zeros of the scores' shape, read from q and k, times
            // beta, added to the scores; now and then zeros of a shape that broadcasts.
            var leading = _b.Node("Slice", [_b.Node("Shape", [q]), _b.Ints(0), _b.Ints(_rank4 ? 3 : 2)]);
            var full = Chance(0.8);
            var zerosShape = full ? _b.Node("Concat", [leading, Length(kLengthSource.Item1, kLengthSource.Item2)], Int("axis", 0)) : _b.Ints(1, 1);
            var zeros = _b.Node("Mul", [_b.Node("ConstantOfShape", [zerosShape], Tensor("value", new ConstantTensor(_scoresType, [1], [0]))), Scalar(1)]);
            scores = Chance(0.5) ? _b.Node("Add", [scores, zeros]) : _b.Node("Add", [zeros, scores]);
            _parts.Add(full ? "zeros of the scores' shape added (baddbmm)" : "zeros (1, 1) added");
        }

        if (mustRefuse != "scale is a graph input" && Chance(0.08))
        {
            var extra = Pick(0.5f, 2f, 0.9f);
            scores = _b.Node("Mul", [scores, Scalar(extra)]);
            _parts.Add($"second scale factor {Describe(extra)}");
        }

        _parts.Add($"scale {scaleForm}{(scaleForm == ScaleForm.None ? "" : $" {Describe(scale)}{(shapeDerived ? " from Shape(q)" : "")}")}");
        if (mustRefuse == "scores have a second consumer")
        {
            _b.Rename(_b.Node("ReduceMax", [scores], Int("keepdims", 0)), "max_score");
            _b.Output("max_score", _type);
        }

        if (_type == DataType.Float16 && Chance(0.5))
        {
            // MPT/T5 style: the scores widened before the masks, which are then float32 (and may hold float32's range).
            scores = _b.Node("Cast", [scores], Int("to", (long)DataType.Float));
            _scoresType = DataType.Float;
            _parts.Add("scores Cast to float32 before the masks");
        }

        if (_type == DataType.Float && Chance(0.06))
        {
            // Masks in float64 arithmetic: finfo.min of float32 no longer absorbs the scores there.
            scores = _b.Node("Cast", [scores], Int("to", (long)DataType.Double));
            _scoresType = DataType.Double;
            _parts.Add("scores Cast to float64 before the masks");
        }

        if (_scoresType == DataType.Float && Chance(0.08))
        {
            var cap = _b.Scalar(Pick(2f, 5f));
            scores = _b.Node("Mul", [_b.Node("Tanh", [_b.Node("Div", [scores, cap])]), cap]);
            _parts.Add("softcap");
        }

        // Masks, up to two, each applied to what the previous one gave.
        var maskCount = _r.NextDouble() switch { < 0.2 => 0, < 0.65 => 1, _ => 2 };
        var causalUsed = false;
        var additiveLast = false;
        // 3-D scores are sometimes viewed as (B, H, S, T) around their masks: split after `viewAt` masks, merged back
        // before Softmax (BART) or after it (BLOOM).
        var view = layout == Layout.Flat && Chance(0.35) ? Pick("merged before Softmax", "merged after Softmax", "never merged") : null;
        var viewAt = _r.Next(maskCount + 1);
        string? queryLength = null, keyLength = null;
        void Split()
        {
            queryLength = Length(q, 1);
            keyLength = Length(kLengthSource.Item1, kLengthSource.Item2);
            scores = _b.Node("Reshape", [scores, _b.Node("Concat", [_b.Ints(-1, _heads), queryLength, keyLength], Int("axis", 0))]);
            _scores4 = true;
            _parts.Add($"(B, H, S, T) view, {view}:");
        }

        string Merge(string x)
        {
            _scores4 = false;
            var leading = Chance(0.5) ? _b.Ints(-1) : Length(q, 0);
            return _b.Node("Reshape", [x, _b.Node("Concat", [leading, queryLength!, keyLength!], Int("axis", 0))]);
        }

        for (var i = 0; i < maskCount; i++)
        {
            if (view is not null && i == viewAt)
            {
                Split();
            }
            else if (view == "merged before Softmax" && i > viewAt && Chance(0.4))
            {
                // CLIP: every mask on a view of its own, merged and split again in between.
                scores = Merge(scores);
                Split();
            }

            var kind = Pick("bias", "padding chain", "where", "causal", "causal");
            if (kind == "causal" && causalUsed)
            {
                kind = "where";
            }

            causalUsed |= kind == "causal";
            (scores, additiveLast) = kind switch
            {
                "bias" => (FloatMask(scores), true),
                "padding chain" => (PaddingChain(scores), true),
                "where" => (WhereMask(scores), false),
                _ => Causal(scores, q, kLengthSource),
            };
        }

        if (view is not null && viewAt == maskCount)
        {
            Split();
        }

        if (additiveLast && Chance(0.25))
        {
            var floor = Pick(FloatMin, FloatMin, FloatMin, -1e9f);
            scores = Chance(0.5) ? _b.Node("Max", [scores, Scalar(floor)]) : _b.Node("Max", [Scalar(floor), scores]);
            _parts.Add($"Max clamp {Describe(floor)}");
        }

        if (view == "merged before Softmax")
        {
            scores = Merge(scores);
        }

        // Softmax and what wraps it.
        var lastAxis = _scores4 ? 3L : 2L;
        string probabilities;
        if (_type == DataType.Float16)
        {
            var wide = _scoresType == DataType.Float ? scores : _b.Node("Cast", [scores], Int("to", (long)DataType.Float));
            _scoresType = DataType.Float16;
            var axis = mustRefuse == "Softmax over another axis" ? lastAxis - 1 : Pick(-1L, lastAxis);
            var softmax = _b.Node("Softmax", [wide], Int("axis", axis));
            probabilities = _b.Node("Cast", [softmax], Int("to", (long)DataType.Float16));
            _parts.Add($"Cast→Softmax(axis {axis})→Cast");
        }
        else if (_scoresType == DataType.Double)
        {
            var axis = mustRefuse == "Softmax over another axis" ? lastAxis - 1 : Pick(-1L, lastAxis);
            probabilities = _b.Node("Cast", [_b.Node("Softmax", [scores], Int("axis", axis))], Int("to", (long)DataType.Float));
            _scoresType = DataType.Float;
            _parts.Add($"Softmax(axis {axis}) in float64→Cast");
        }
        else if (mustRefuse != "Softmax over another axis" && Chance(0.1))
        {
            var max = _b.Node("ReduceMax", [scores], Ints("axes", Pick(-1L, lastAxis)), Int("keepdims", 1));
            var exp = _b.Node("Exp", [_b.Node("Sub", [scores, max])]);
            probabilities = _b.Node("Div", [exp, _b.Node("ReduceSum", [exp, _b.Ints(Pick(-1L, lastAxis))], Int("keepdims", 1))]);
            _parts.Add("Softmax written out");
        }
        else
        {
            if (Chance(0.15))
            {
                scores = _b.Node("Cast", [scores], Int("to", (long)DataType.Float));
                _parts.Add("no-op Cast before Softmax");
            }

            var axis = mustRefuse == "Softmax over another axis" ? Pick(lastAxis - 1, -2L) : Pick(-1L, lastAxis);
            probabilities = _b.Node("Softmax", [scores], Int("axis", axis));
            _parts.Add($"Softmax(axis {axis})");
        }

        if (view == "merged after Softmax")
        {
            probabilities = Merge(_type == DataType.Float && Chance(0.5) ? _b.Node("Cast", [probabilities], Int("to", (long)DataType.Float)) : probabilities);
        }

        if (mustRefuse == "probabilities are a graph output")
        {
            _b.Output(probabilities, _type);
        }

        if (_type == DataType.Float && Chance(0.1))
        {
            probabilities = _b.Node("Cast", [probabilities], Int("to", (long)DataType.Float));
            _parts.Add("no-op Cast after Softmax");
        }

        if (mustRefuse == "Dropout in training mode" || Chance(0.15))
        {
            var training = mustRefuse == "Dropout in training mode" ? 1 : Chance(0.5) ? 0 : -1;
            string[] inputs = training < 0 ? [probabilities, _b.Scalar(0.1f)] : [probabilities, _b.Scalar(0.1f), _b.Initializer(new ConstantTensor(DataType.Bool, [], [training]))];
            probabilities = _b.Node("Dropout", inputs);
            _parts.Add(training == 1 ? "Dropout(training)" : "Dropout");
        }

        if (Chance(0.1))
        {
            probabilities = _b.Node("Identity", [probabilities]);
            _parts.Add("Identity");
        }

        if (Chance(0.3))
        {
            var guard = Pick("Where(IsNaN(p), 0, p)", "Where(IsNaN(p), 0, p)", "Where(Not(IsNaN(p)), p, 0)", "Where(IsNaN(p), 0.5, p)");
            var isNaN = _b.Node("IsNaN", [probabilities]);
            probabilities = guard switch
            {
                "Where(IsNaN(p), 0, p)" => _b.Node("Where", [isNaN, Scalar(0), probabilities]),
                "Where(Not(IsNaN(p)), p, 0)" => _b.Node("Where", [_b.Node("Not", [isNaN]), probabilities, Scalar(0)]),
                _ => _b.Node("Where", [isNaN, Scalar(0.5f), probabilities]),
            };
            _parts.Add($"guard {guard}");
        }

        // Value product and output; on a view that is never merged, the value is grouped (B, H, T, D) as well (GPT-NeoX).
        if (view == "never merged")
        {
            valueEinsum = false;
            v = _b.Node("Reshape", [v, _b.Node("Concat", [_b.Ints(-1, _heads), Length(v, 1), _b.Ints(_headDim)], Int("axis", 0))]);
        }

        var output = valueEinsum
            ? _b.Node("Einsum", [probabilities, v], Str("equation", layout == Layout.SequenceFirstEinsum ? (keras ? "acbe,aecd->abcd" : "bhqk,bkhd->bqhd")
                : _rank4 ? "bhqk,bhkd->bhqd" : "nqk,nkd->nqd"))
            : _b.Node("MatMul", [probabilities, v]);
        _parts.Add(valueEinsum ? "Einsum value product" : "MatMul value product");
        if (layout == Layout.SplitHeads && Chance(0.5))
        {
            output = _b.Node("Reshape", [_b.Node("Transpose", [output], Ints("perm", 0, 2, 1, 3)), _b.Ints(0, 0, _heads * _headDim)]);
            _parts.Add("heads merged");
        }

        _b.Rename(output, "out");
        _b.Output("out", _type);
        mustRefuse ??= _perHeadScale ? "per-head scale" : null;
        if (mustRefuse is not null)
        {
            _parts.Add($"must refuse: {mustRefuse}");
        }

        var lengths = Lengths();
        _parts.Add("lengths " + string.Join(" ", lengths.Select(l => $"({l.S},{l.T})")));
        return new FuzzCase(seed, string.Join("; ", _parts), _b.Model, _inputs, lengths, FuzzCase.Batch * _heads, _type, mustRefuse, _quantizingFill);
    }

    private (long S, long T)[] Lengths()
    {
        var count = _r.Next(2, 4);
        return _keyLength == "S"
            ? SelfLengths.OrderBy(_ => _r.Next()).Take(count).Select(s => (s, s)).ToArray()
            : CrossLengths.OrderBy(_ => _r.Next()).Take(count).ToArray();
    }

    private string Input(string name, DataType type, object[] dims, AxisRole[] roles, InputContent content, float fill = 0)
    {
        _inputs.Add(new FuzzInput(name, type, dims, roles, content, fill, content == InputContent.Random && Chance(0.2) ? 3 : 1));
        return _b.Input(name, type, dims);
    }

    /// <summary>√D as a 1-element float vector read from Shape(q).</summary>
    private string RootOfHeadDim(string q) =>
        _b.Node("Sqrt", [_b.Node("Cast", [_b.Node("Slice", [_b.Node("Shape", [q]), _b.Ints(-1), _b.Ints(long.MaxValue)])], Int("to", (long)DataType.Float))]);

    /// <summary>Length of axis <paramref name="axis"/> of <paramref name="x"/> as a 1-element vector.</summary>
    private string Length(string x, long axis) => _b.Node("Slice", [_b.Node("Shape", [x]), _b.Ints(axis), _b.Ints(axis + 1)]);

    /// <summary>(B, Hkv, T, D) → (B, Hq, T, D), each kv head repeated contiguously (transformers' repeat_kv) or the heads interleaved.</summary>
    private string RepeatHeads(string x, long kvHeads, bool interleaved)
    {
        var shape = _b.Node("Shape", [x]);
        var batch = _b.Node("Slice", [shape, _b.Ints(0), _b.Ints(1)]);
        var lengthDim = _b.Node("Slice", [shape, _b.Ints(2), _b.Ints(4)]);
        var expandedShape = interleaved
            ? _b.Node("Concat", [batch, _b.Ints(_heads / kvHeads), _b.Node("Slice", [shape, _b.Ints(1), _b.Ints(4)])], Int("axis", 0))
            : _b.Node("Concat", [_b.Node("Slice", [shape, _b.Ints(0), _b.Ints(2)]), _b.Ints(_heads / kvHeads), lengthDim], Int("axis", 0));
        var expanded = _b.Node("Expand", [_b.Node("Unsqueeze", [x, _b.Ints(interleaved ? 1 : 2)]), expandedShape]);
        return _b.Node("Reshape", [expanded, _b.Node("Concat", [_b.Node("Slice", [shape, _b.Ints(0), _b.Ints(1)]), _b.Ints(_heads), lengthDim], Int("axis", 0))]);
    }

    /// <summary>Kᵀ as the dynamo exporter writes it: Reshape to (B·H, T, D), Transpose(0,2,1), Reshape to (B, H, D, T).</summary>
    private string ReshapedTranspose(string k)
    {
        var shape = _b.Node("Shape", [k]);
        var merged = _b.Node("Reshape", [k, _b.Node("Concat", [_b.Ints(-1), _b.Node("Slice", [shape, _b.Ints(2), _b.Ints(4)])], Int("axis", 0))]);
        var swapped = _b.Node("Transpose", [merged], Ints("perm", 0, 2, 1));
        var dims = _b.Node("Concat", [_b.Node("Slice", [shape, _b.Ints(0), _b.Ints(2)]), _b.Node("Slice", [shape, _b.Ints(3), _b.Ints(4)]),
            _b.Node("Slice", [shape, _b.Ints(2), _b.Ints(3)])], Int("axis", 0));
        return _b.Node("Reshape", [swapped, dims]);
    }

    /// <summary>A broadcast shape for a mask on the scores, with what each axis stands for.</summary>
    private (object[] Dims, AxisRole[] Roles) MaskShape()
    {
        const AxisRole E = AxisRole.Entry, R = AxisRole.Row, K = AxisRole.Key, O = AxisRole.Other;
        var shapes = _scores4
            ? new (object[], AxisRole[])[]
            {
                (["B", 1, 1, _keyLength], [E, O, O, K]), (["B", 1, "S", _keyLength], [E, O, R, K]), ([1, _heads, "S", _keyLength], [O, O, R, K]),
                (["B", _heads, "S", _keyLength], [E, O, R, K]), (["S", _keyLength], [R, K]), ([_keyLength], [K]), ([1, 1, "S", _keyLength], [O, O, R, K]),
                (["B", _heads, 1, _keyLength], [E, O, O, K]), (["B", 1, "S", 1], [E, O, R, O]), (["S", 1], [R, O]),
            }
            : [(["N", 1, _keyLength], [E, O, K]), (["N", "S", _keyLength], [E, R, K]), ([1, "S", _keyLength], [O, R, K]), (["S", _keyLength], [R, K]), ([_keyLength], [K]),
               (["N", "S", 1], [E, R, O])];
        return Pick(shapes);
    }

    private string Describe(object[] dims) => "(" + string.Join(",", dims) + ")";

    /// <summary>
    /// A fill for an additive mask. Masks added to float16 scores only hide with −inf: the op adds its bias in float32
    /// (the contract), so a row hidden entirely by a finite fill such as −10000 or −65504, which float16 arithmetic rounds
    /// to a near-uniform row in the original, is a softmax of the scores in the op — a known limit of float16 graphs, not
    /// what this test looks for. Float16 masks with finite fills still come in after a Cast to float32 scores.
    /// </summary>
    private float Fill(bool infinityAllowed = true) => _scoresType == DataType.Float16
        ? float.NegativeInfinity
        : infinityAllowed ? Pick(-10000f, -1e9f, FloatMin, FloatMin, float.NegativeInfinity) : Pick(-10000f, -1e9f, FloatMin, FloatMin);

    /// <summary>
    /// A finite fill such as −10000 or −65504 does not absorb the scores: a row it hides entirely is a softmax of the
    /// scores rounded to the fill's float32 spacing (2⁻¹⁰ at 10000), where a scale folded into the op instead of applied
    /// to Q and K (equally exact) can move a score by one such step. Such graphs are compared with a looser tolerance.
    /// </summary>
    private void NoteQuantizingFill(float fill) => _quantizingFill |= float.IsFinite(fill) && Math.Abs(fill) is >= 1000 and < 1e6f;

    /// <summary>An additive mask input: Add either order, or Sub of a penalty.</summary>
    private string FloatMask(string scores)
    {
        var (dims, roles) = MaskShape();
        var fill = Fill();
        var positionBias = Chance(0.3);
        var subtract = !positionBias && Chance(0.2);
        var name = $"mask{_masks++}";
        var narrow = _scoresType == DataType.Float && Chance(0.1);
        if (narrow)
        {
            // Held by float16 and added in float32, as the op does.
            fill = Pick(-10000f, -65504f, float.NegativeInfinity);
        }

        NoteQuantizingFill(fill);
        var mask = Input(name, narrow ? DataType.Float16 : _scoresType, dims, roles, positionBias ? InputContent.Bias : subtract ? InputContent.Penalty : InputContent.Additive, fill);
        if (narrow)
        {
            mask = _b.Node("Cast", [mask], Int("to", (long)DataType.Float));
        }

        // Sub(M, s) is M − s, which negates the scores: not a mask.
        var reversed = subtract && Chance(0.2);
        _parts.Add($"{(reversed ? "Sub(mask, scores) of a" : subtract ? "Sub" : "Add")} {(positionBias ? "position bias" : "float mask")}{(narrow ? " (float16, Cast)" : "")} {Describe(dims)} fill {Describe(fill)}");
        return reversed ? _b.Node("Sub", [mask, scores])
            : subtract ? _b.Node("Sub", [scores, mask]) : Chance(0.5) ? _b.Node("Add", [scores, mask]) : _b.Node("Add", [mask, scores]);
    }

    /// <summary>(1 − m)·F from an int64, bool or float padding mask m (entries, T), or Where(m, 0, −inf).</summary>
    private string PaddingChain(string scores)
    {
        var maskType = Pick(DataType.Int64, DataType.Bool, _scoresType);
        var name = $"mask{_masks++}";
        // An integer mask may hold counts other than 0 and 1, a float one fractions: (1 − m)·F is then no longer only 0 and F.
        var content = maskType != DataType.Bool && Chance(0.25) ? InputContent.Counts : InputContent.Keep;
        var m = Input(name, maskType, [Entry, _keyLength], [AxisRole.Entry, AxisRole.Key], content);
        var fill = Fill();
        NoteQuantizingFill(fill);
        long[] axes = _scores4 ? [1, 2] : [1];
        string bias;
        if (float.IsNegativeInfinity(fill))
        {
            var keep = maskType == DataType.Bool ? m : _b.Node("Cast", [m], Int("to", (long)DataType.Bool));
            bias = _b.Node("Where", [_b.Node("Unsqueeze", [keep, _b.Ints(axes)]), Scalar(0), Scalar(fill)]);
            _parts.Add($"Add Where({maskType} m, 0, -inf) ({Entry},T)");
        }
        else
        {
            var typed = maskType == _scoresType ? m : _b.Node("Cast", [m], Int("to", (long)_scoresType));
            var inverted = _b.Node("Sub", [Scalar(1), _b.Node("Unsqueeze", [typed, _b.Ints(axes)])]);
            bias = Chance(0.5) ? _b.Node("Mul", [inverted, Scalar(fill)]) : _b.Node("Mul", [Scalar(fill), inverted]);
            _parts.Add($"Add (1 − {maskType} m{(content == InputContent.Counts ? " holding 0, 1 and 2 (or 0.5)" : "")})·{Describe(fill)} ({Entry},T)");
        }

        return Chance(0.5) ? _b.Node("Add", [scores, bias]) : _b.Node("Add", [bias, scores]);
    }

    /// <summary>Where(keep, s, F) or Where(hide, F, s) with a bool mask input.</summary>
    private string WhereMask(string scores)
    {
        var (dims, roles) = MaskShape();
        var fill = _scoresType == DataType.Float16 ? Pick(float.NegativeInfinity, -65504f) : Pick(float.NegativeInfinity, float.NegativeInfinity, FloatMin, FloatMin, -1e9f, -10000f);
        var name = $"mask{_masks++}";
        var polarity = Pick("keep", "hide input", "Not(keep)", "keep", "hide input", "Not(keep)", "Not(Not(keep))");
        var mask = Input(name, DataType.Bool, dims, roles, polarity == "hide input" ? InputContent.Hidden : InputContent.Keep);
        if (Chance(0.2))
        {
            // DistilBERT: the mask expanded to Shape(scores), a reader of the scores the rewrite must re-point.
            var start = Chance(0.3);
            var shape = start ? _b.Node("Shape", [scores], Int("start", 0)) : _b.Node("Shape", [scores]);
            mask = _b.Node("Expand", [mask, shape]);
            _parts.Add($"mask expanded to Shape({(start ? "scores, start=0" : "scores")})");
        }
        // The fill is mostly a scalar; sometimes a (1, H, 1, 1) tensor, all one value or mixing −inf and finfo.min per head.
        var fillValue = Scalar(fill);
        var fillForm = "";
        if (_scores4 && _scoresType == DataType.Float && Chance(0.15))
        {
            var mixed = Chance(0.5);
            var values = Enumerable.Range(0, (int)_heads).Select(h => mixed && h % 2 == 1 ? (float.IsNegativeInfinity(fill) ? FloatMin : float.NegativeInfinity) : fill).ToArray();
            fillValue = _b.Floats([1, _heads, 1, 1], values);
            fillForm = mixed ? " per head, mixing -inf and finfo.min" : " as a (1,H,1,1) tensor";
        }

        _parts.Add($"Where {polarity} {Describe(dims)} fill {Describe(fill)}{fillForm}");
        return polarity switch
        {
            "keep" => _b.Node("Where", [mask, scores, fillValue]),
            "hide input" => _b.Node("Where", [mask, fillValue, scores]),
            "Not(Not(keep))" => _b.Node("Where", [_b.Node("Not", [_b.Node("Not", [mask])]), scores, fillValue]),
            _ => _b.Node("Where", [_b.Node("Not", [mask]), fillValue, scores]),
        };
    }

    /// <summary>A causal mask in one of the exported spellings; returns the masked scores and whether it was additive.</summary>
    private (string Scores, bool Additive) Causal(string scores, string q, (string Value, long Axis) keySource)
    {
        var self = _keyLength == "S";
        var form = _scoresType == DataType.Float16 ? Pick("Trilu keep", "Trilu hidden")
            : Pick("Trilu keep", "Trilu hidden", "triu(full(F), 1)", self || _past ? "buffer slice" : "Trilu keep", self ? "additive buffer slice" : "triu(full(F), 1)",
                   _past ? "buffer slice" : "Trilu hidden");
        var fill = _scoresType == DataType.Float16 ? float.NegativeInfinity : Pick(float.NegativeInfinity, FloatMin);
        // Mostly the causal diagonal; now and then a shifted one (or Trilu's upper part), which is not causal and must stay a mask.
        var diagonal = Chance(0.8) ? 0L : Pick(1L, -1L, 2L);
        var upper = form.StartsWith("Trilu", StringComparison.Ordinal) && Chance(0.08);
        _parts.Add($"causal {form} fill {Describe(fill)}{(diagonal != 0 ? $" diagonal shifted by {diagonal}" : "")}{(upper ? " upper part kept" : "")}");
        string[] TriluInputs(string x, long k) => k == 0 && Chance(0.5) ? [x] : [x, _b.Initializer(ConstantTensor.Scalar(DataType.Int64, k))];
        var qLength = Length(q, _queryLengthAxis);
        var kLength = Length(keySource.Value, keySource.Axis);
        string Full(DataType type, float value) =>
            _b.Node("ConstantOfShape", [_b.Node("Concat", [qLength, kLength], Int("axis", 0))], Tensor("value", new ConstantTensor(type, [1], [value])));
        switch (form)
        {
            case "Trilu keep":
                var keep = _b.Node("Cast", [_b.Node("Trilu", TriluInputs(Full(DataType.Int64, 1), diagonal), Int("upper", upper ? 1 : 0))], Int("to", (long)DataType.Bool));
                return (_b.Node("Where", [keep, scores, Scalar(fill)]), false);
            case "Trilu hidden":
                var hidden = _b.Node("Equal", [_b.Node("Trilu", TriluInputs(Full(DataType.Float, 1), diagonal), Int("upper", upper ? 1 : 0)), _b.Scalar(0)]);
                return (_b.Node("Add", [scores, _b.Node("Where", [hidden, Scalar(fill), Scalar(0)])]), true);
            case "triu(full(F), 1)":
                var triangle = _b.Node("Trilu", [Full(_scoresType, fill), _b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1 + diagonal))], Int("upper", 1));
                return (Chance(0.5) ? _b.Node("Add", [scores, triangle]) : _b.Node("Add", [triangle, scores]), true);
            case "buffer slice":
                const int size = 16;
                var tril = Enumerable.Range(0, size * size).Select(i => i % size <= i / size + diagonal ? 1.0 : 0.0).ToArray();
                // GPT-2's (1, 1, n, n) buffer for 4-D scores, an (n, n) one for 3-D scores.
                var buffer = _b.Initializer(new ConstantTensor(DataType.Bool, _scores4 ? [1, 1, size, size] : [size, size], tril));
                var rowAxis = _scores4 ? 2L : 0L;
                var start = _b.Node("Sub", [kLength, qLength]);
                var rows = _b.Node("Slice", [buffer, start, kLength, _b.Ints(rowAxis)]);
                var sliced = _b.Node("Slice", [rows, _b.Ints(0), kLength, _b.Ints(rowAxis + 1)]);
                return (_b.Node("Where", [sliced, scores, Scalar(fill)]), false);
            default:
                const int n = 16;
                var values = Enumerable.Range(0, n * n).Select(i => i % n <= i / n + diagonal ? 0.0 : fill).ToArray();
                var additive = _b.Initializer(new ConstantTensor(_scoresType, [n, n], values));
                var mask = _b.Node("Slice", [_b.Node("Slice", [additive, _b.Ints(0), qLength, _b.Ints(0)]), _b.Ints(0), qLength, _b.Ints(1)]);
                return (_b.Node("Add", [scores, mask]), true);
        }
    }
}
