using OrtFlash.GraphRewriter.Onnx;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.GraphRewriter.Graph;

/// <summary>
/// What the rewriter can know about values without running the model: element types and shapes
/// (declared, or propagated through common ops), shape vectors with symbolic entries, and small
/// constants folded from initializers, Constant nodes and scalar arithmetic chains.
/// Results are memoized; create a new analysis after changing the graph.
/// </summary>
public sealed class GraphAnalysis
{
    private readonly Dictionary<Value, TensorType?> _types = [];
    private readonly Dictionary<Value, ConstantTensor?> _constants = [];
    private readonly Dictionary<Value, Dim[]?> _shapeVectors = [];
    private readonly HashSet<Value> _typesInProgress = [];
    private readonly HashSet<Value> _constantsInProgress = [];
    private readonly HashSet<Value> _shapeVectorsInProgress = [];

    /// <summary>How deep constant folding and shape-vector evaluation follow producers.</summary>
    private const int MaxEvaluationDepth = 48;

    private int _depth;

    /// <summary>Creates an analysis of <paramref name="model"/>, inferring types in topological order.</summary>
    public GraphAnalysis(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        Model = model;

        // Visiting nodes in order keeps type inference shallow: each node finds its inputs done.
        foreach (var graph in model.Graphs)
        {
            foreach (var node in graph.Nodes)
            {
                foreach (var output in node.Outputs.OfType<Value>())
                {
                    TypeOf(output);
                }
            }
        }
    }

    /// <summary>The model analysed.</summary>
    public OnnxModel Model { get; }

    /// <summary>The element type and shape of <paramref name="value"/>, or null when unknown.</summary>
    public TensorType? TypeOf(Value value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (_types.TryGetValue(value, out var known))
        {
            return known;
        }

        if (!_typesInProgress.Add(value))
        {
            return null;
        }

        try
        {
            var declared = TensorType.FromProto(value.DeclaredType);
            TensorType? result = declared;
            if (declared?.Shape is null || declared.ElementType == DataType.Undefined)
            {
                var inferred = value.Initializer is { } init
                    ? new TensorType((DataType)init.DataType, init.Dims.Select(Dim.Of).ToArray())
                    : value.Producer is { } producer ? Infer(producer, value) : null;
                if (inferred is null && ConstantOf(value) is { } constant)
                {
                    inferred = new TensorType(constant.ElementType, constant.Dims.Select(Dim.Of).ToArray());
                }

                result = Merge(declared, inferred);
            }
            else if (value.Producer is { } producer && declared.Shape.Any(IsGeneratedSymbol) &&
                     Infer(producer, value)?.Shape is { } inferredShape && inferredShape.Count == declared.Shape.Count)
            {
                // A generated symbol only says "some size"; what the producer proves about that axis says more.
                result = declared with
                {
                    Shape = declared.Shape.Zip(inferredShape, (d, i) => IsGeneratedSymbol(d) && (i.IsKnown || i.Symbol is not null) ? i : d).ToArray(),
                };
            }

            result = WithOpaqueDims(value, result);
            _types[value] = result;
            return result;
        }
        finally
        {
            _typesInProgress.Remove(value);
        }
    }

    /// <summary>
    /// Whether a declared dimension is a name ONNX shape inference made up for a size it could not work out ("unk__7", as
    /// float16 converters leave in value_info): it relates the values declared with it and nothing else.
    /// </summary>
    private static bool IsGeneratedSymbol(Dim dim) => dim.Symbol?.StartsWith("unk__", StringComparison.Ordinal) == true;

    /// <summary>
    /// Names each dimension nothing else tells after the value and axis ("x#2"): a dimension is
    /// always equal to itself, so shapes copied from the same value (through Shape, Reshape's 0,
    /// Transpose, ...) stay provably equal even when their size is unknown.
    /// </summary>
    private static TensorType? WithOpaqueDims(Value value, TensorType? type)
    {
        if (type?.Shape is not { } shape || shape.All(d => d.IsKnown || d.Symbol is not null))
        {
            return type;
        }

        return type with { Shape = shape.Select((d, i) => d.IsKnown || d.Symbol is not null ? d : Dim.Named($"{value.Name}#{i}")).ToArray() };
    }

    /// <summary>The shape of <paramref name="value"/>, or null when even its rank is unknown.</summary>
    public IReadOnlyList<Dim>? ShapeOf(Value value) => TypeOf(value)?.Shape;

    /// <summary>The element type of <paramref name="value"/>, or Undefined.</summary>
    public DataType ElementTypeOf(Value value) => TypeOf(value)?.ElementType ?? DataType.Undefined;

    /// <summary>The length of Range(start, limit, 1): limit − start when that is stated and non-negative.</summary>
    private Dim RangeLength(Node range)
    {
        if (range.Input(2) is not { } delta || ScalarOf(delta) != 1 || range.Input(1) is not { } limit ||
            ShapeVector(range.Input(0)!) is not [var first] || ShapeVector(limit) is not [var end])
        {
            return Dim.Unknown;
        }

        // max(limit − start, 0): a difference that is not provably non-negative is not a length.
        var length = Dim.Subtract(end, first);
        return length.IsNonNegative ? length : Dim.Unknown;
    }

    private static TensorType? Merge(TensorType? declared, TensorType? inferred)
    {
        if (declared is null)
        {
            return inferred;
        }

        if (inferred is null)
        {
            return declared;
        }

        var type = declared.ElementType != DataType.Undefined ? declared.ElementType : inferred.ElementType;
        return new TensorType(type, declared.Shape ?? inferred.Shape);
    }

    private TensorType? Infer(Node node, Value output)
    {
        var first = node.Input(0) is { } x ? TypeOf(x) : null;
        if (node.Domain == "com.ortflash" && node.OpType == "FlashAttention")
        {
            // Y = Q's shape with the last dim replaced by V's.
            var v = node.Input(2) is { } value ? ShapeOf(value) : null;
            return first?.Shape is { Count: > 0 } q && v is { Count: > 0 } ? first with { Shape = [.. q.Take(q.Count - 1), v[^1]] } : first;
        }

        if (node.Domain.Length != 0 && node.Domain != "ai.onnx")
        {
            return null;
        }

        switch (node.OpType)
        {
            case "Identity" or "Dropout" or "Sqrt" or "Neg" or "Tanh" or "Relu" or "Exp" or "Abs" or "Reciprocal"
                or "Softmax" or "LogSoftmax" or "Sigmoid" or "Not" or "Erf" or "Trilu" or "Gelu" or "FastGelu"
                or "LayerNormalization" or "SimplifiedLayerNormalization" or "Log" or "Floor" or "Ceil" or "Round"
                or "Sin" or "Cos" or "HardSigmoid" or "LeakyRelu" or "Elu" or "Selu" or "Softplus" or "ScatterND" or "CumSum" or "Sign" or "Clip"
                or "InstanceNormalization" or "GroupNormalization" or "BatchNormalization" or "MeanVarianceNormalization":
                // torch's GroupNorm exports as Reshape → InstanceNormalization → Reshape (diffusers' UNet blocks).
                return output == node.Output(0) ? first : null;
            case "Gather":
                return InferGather(node, first);
            case "GatherElements":
                // The output takes the indices' shape (HF DeBERTa gathers its relative-position scores so).
                return first is not null && node.Input(1) is { } indices && ShapeOf(indices) is { } indexShape ? new TensorType(first.ElementType, indexShape) : null;
            case "Tile":
                return InferTile(node, first);
            case "Concat":
                return InferConcat(node);
            case "Slice":
                return InferSlice(node, first);
            case "Split":
                return InferSplit(node, first, output);
            case "ReduceMean" or "ReduceSum" or "ReduceMax" or "ReduceMin" or "ReduceProd":
                return InferReduce(node, first);
            case "Conv" or "ConvTranspose" or "MaxPool" or "AveragePool":
                return InferConvolution(node, first);
            case "Gemm":
                return first is null ? null : new TensorType(first.ElementType, [Dim.Unknown, Dim.Unknown]);
            case "Range":
                return node.Input(0) is { } start ? new TensorType(ElementTypeOf(start), [RangeLength(node)]) : null;
            case "Cast":
                return first is null ? null : new TensorType((DataType)(node.IntAttribute("to") ?? 0), first.Shape);
            case "CastLike":
                return first is null ? null : new TensorType(ElementTypeOf(node.Input(1)!), first.Shape);
            case "IsNaN" or "IsInf":
                return first is null ? null : new TensorType(DataType.Bool, first.Shape);
            case "Add" or "Sub" or "Mul" or "Div" or "Pow" or "Max" or "Min":
                return Broadcast(first?.ElementType ?? DataType.Undefined, node.Inputs);
            case "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" or "And" or "Or" or "Xor":
                return Broadcast(DataType.Bool, node.Inputs);
            case "Where":
                return Broadcast(node.Input(1) is { } a ? ElementTypeOf(a) : DataType.Undefined, node.Inputs);
            case "MatMul":
                return InferMatMul(first, node.Input(1) is { } b ? TypeOf(b) : null);
            case "Einsum":
                return first is null ? null
                    : InferEinsum(node, first.ElementType);
            case "Transpose":
                return InferTranspose(node, first);
            case "Reshape":
                return first is null ? null : new TensorType(first.ElementType, InferReshape(node, first.Shape));
            case "Unsqueeze" or "Squeeze":
                return first is null ? null : new TensorType(first.ElementType, InferSqueeze(node, first.Shape));
            case "Expand":
                return InferExpand(node, first);
            case "Pad":
                return InferPad(node, first);
            case "Shape":
                return first?.Shape is { } s ? new TensorType(DataType.Int64, [Dim.Of(ShapeRange(node, s.Count).Count)]) : null;
            case "Constant":
                return ConstantOf(output) is { } c ? new TensorType(c.ElementType, c.Dims.Select(Dim.Of).ToArray()) : null;
            case "ConstantOfShape":
                var dims = ShapeVector(node.Input(0)!);
                var valueType = node.Attribute("value")?.T is { } t ? (DataType)t.DataType : DataType.Float;
                return new TensorType(valueType, dims);
            default:
                return null;
        }
    }

    /// <summary>Pad keeps the rank; a dim grows by its two pads when both are known (opset 11+ pads input, or the attribute).</summary>
    private TensorType? InferPad(Node node, TensorType? data)
    {
        if (data?.Shape is not { } shape)
        {
            return data;
        }

        var pads = node.Input(1) is { } padsInput ? ShapeVector(padsInput) : node.Proto.Attribute.FirstOrDefault(a => a.Name == "pads") is { } attribute
            ? attribute.Ints.Select(Dim.Of).ToArray() : null;
        if (pads is null || pads.Length != 2 * shape.Count || node.Input(3) is not null)
        {
            return new TensorType(data.ElementType, shape.Select(_ => Dim.Unknown).ToArray());
        }

        return new TensorType(data.ElementType, shape.Select((d, i) => Dim.Add(Dim.Add(d, pads[i]), pads[i + shape.Count])).ToArray());
    }

    private TensorType? InferGather(Node node, TensorType? data)
    {
        if (data?.Shape is not { } shape || node.Input(1) is not { } indexValue || ShapeOf(indexValue) is not { } indices)
        {
            return data is null ? null : new TensorType(data.ElementType, null);
        }

        var axis = (int)(node.IntAttribute("axis") ?? 0);
        axis = axis < 0 ? axis + shape.Count : axis;
        if (axis < 0 || axis >= shape.Count)
        {
            return new TensorType(data.ElementType, null);
        }

        return new TensorType(data.ElementType, [.. shape.Take(axis), .. indices, .. shape.Skip(axis + 1)]);
    }

    /// <summary>Convolution and pooling: rank kept, channels from the weight, spatial sizes left unknown.</summary>
    private TensorType? InferConvolution(Node node, TensorType? input)
    {
        if (input?.Shape is not { Count: >= 3 } shape)
        {
            return input;
        }

        var channels = node.OpType == "Conv" && node.Input(1) is { } weight && ShapeOf(weight) is { Count: >= 1 } w ? w[0] : shape[1];
        if (node.OpType != "Conv")
        {
            channels = node.OpType == "ConvTranspose" ? Dim.Unknown : shape[1];
        }

        return new TensorType(input.ElementType, [shape[0], channels, .. shape.Skip(2).Select(_ => Dim.Unknown)]);
    }

    /// <summary>Split keeps every dimension but the split axis; that one is known from constant sizes or an even split.</summary>
    private TensorType? InferSplit(Node node, TensorType? input, Value output)
    {
        if (input?.Shape is not { } shape)
        {
            return input;
        }

        var axis = (int)(node.IntAttribute("axis") ?? 0);
        axis = axis < 0 ? axis + shape.Count : axis;
        if (axis < 0 || axis >= shape.Count)
        {
            return new TensorType(input.ElementType, null);
        }

        var index = node.Outputs.ToList().IndexOf(output);
        var sizes = node.IntsAttribute("split")?.ToArray() ?? (node.Input(1) is { } split ? ConstantOf(split)?.AsInt64() : null);
        var result = shape.ToArray();
        result[axis] = sizes is not null && index < sizes.Length ? Dim.Of(sizes[index])
            : sizes is null && shape[axis].Size is { } total && total % node.Outputs.Count == 0 ? Dim.Of(total / node.Outputs.Count)
            : Dim.Unknown;
        return new TensorType(input.ElementType, result);
    }

    private TensorType? InferConcat(Node node)
    {
        var types = node.Inputs.OfType<Value>().Select(TypeOf).ToList();
        if (types.Count == 0 || types[0] is not { } first)
        {
            return null;
        }

        if (types.Any(t => t?.Shape is null) || types.Select(t => t!.Shape!.Count).Distinct().Count() != 1)
        {
            return new TensorType(first.ElementType, null);
        }

        var rank = first.Shape!.Count;
        var axis = (int)(node.IntAttribute("axis") ?? 0);
        axis = axis < 0 ? axis + rank : axis;
        var result = new Dim[rank];
        for (var i = 0; i < rank; i++)
        {
            result[i] = i == axis
                ? types.Select(t => t!.Shape![i]).Aggregate(Dim.Of(0), Dim.Add)
                : types.Select(t => t!.Shape![i]).FirstOrDefault(d => d.IsKnown, types[0]!.Shape![i]);
        }

        return new TensorType(first.ElementType, result);
    }

    private TensorType? InferSlice(Node node, TensorType? data)
    {
        if (data?.Shape is not { } shape)
        {
            return data;
        }

        var result = shape.ToArray();
        var starts = node.IntsAttribute("starts")?.ToArray() ?? (node.Input(1) is { } s ? ConstantOf(s)?.AsInt64() : null);
        var ends = node.IntsAttribute("ends")?.ToArray() ?? (node.Input(2) is { } e ? ConstantOf(e)?.AsInt64() : null);
        var axes = node.IntsAttribute("axes")?.ToArray() ?? (node.Input(3) is { } a ? ConstantOf(a)?.AsInt64() : null);
        var steps = node.Input(4) is { } st ? ConstantOf(st)?.AsInt64() : null;
        if (axes is null && node.Input(3) is not null)
        {
            return new TensorType(data.ElementType, shape.Select(_ => Dim.Unknown).ToArray());
        }

        axes ??= Enumerable.Range(0, starts?.Length ?? 0).Select(i => (long)i).ToArray();
        for (var i = 0; i < axes.Length; i++)
        {
            var axis = (int)(axes[i] < 0 ? axes[i] + shape.Count : axes[i]);
            if (axis < 0 || axis >= shape.Count)
            {
                return new TensorType(data.ElementType, null);
            }

            result[axis] = Dim.Unknown;
            if (starts is not null && ends is not null && i < starts.Length && i < ends.Length &&
                (steps is null || steps[i] == 1) && shape[axis].Size is { } n)
            {
                var start = Math.Clamp(starts[i] < 0 ? starts[i] + n : starts[i], 0, n);
                var end = Math.Clamp(ends[i] < 0 ? ends[i] + n : ends[i], 0, n);
                result[axis] = Dim.Of(Math.Max(0, end - start));
            }
            else if (starts is not null && ends is not null && i < starts.Length && i < ends.Length &&
                     starts[i] == 0 && ends[i] == long.MaxValue && (steps is null || steps[i] == 1))
            {
                result[axis] = shape[axis];
            }
            else if (starts is not null && i < starts.Length && starts[i] == 0 && (steps is null || steps[i] == 1) && axes.Length == 1 &&
                     node.Input(2) is { } endInput && ShapeVector(endInput) is [var symbolicEnd] && symbolicEnd.SameAs(shape[axis]) == true)
            {
                // [0, n) of an axis n long, n read from a shape.
                result[axis] = shape[axis];
            }
        }

        return new TensorType(data.ElementType, result);
    }

    private TensorType? InferReduce(Node node, TensorType? data)
    {
        if (data?.Shape is not { } shape)
        {
            return data;
        }

        var keep = (node.IntAttribute("keepdims") ?? 1) == 1;
        var axes = AxesOf(node)?.Select(a => (int)(a < 0 ? a + shape.Count : a)).ToHashSet();
        if (axes is null || axes.Count == 0)
        {
            return new TensorType(data.ElementType, keep ? shape.Select(_ => Dim.Of(1)).ToArray() : []);
        }

        var result = new List<Dim>();
        for (var i = 0; i < shape.Count; i++)
        {
            if (!axes.Contains(i))
            {
                result.Add(shape[i]);
            }
            else if (keep)
            {
                result.Add(Dim.Of(1));
            }
        }

        return new TensorType(data.ElementType, result);
    }

    private TensorType? Broadcast(DataType type, IReadOnlyList<Value?> inputs)
    {
        var shapes = inputs.OfType<Value>().Select(ShapeOf).ToList();
        if (shapes.Any(s => s is null))
        {
            return new TensorType(type, null);
        }

        return new TensorType(type, BroadcastShapes(shapes!));
    }

    /// <summary>Numpy-style broadcast of shapes; a dim that cannot be decided becomes unknown.</summary>
    public static IReadOnlyList<Dim> BroadcastShapes(IReadOnlyList<IReadOnlyList<Dim>> shapes)
    {
        ArgumentNullException.ThrowIfNull(shapes);
        var rank = shapes.Max(s => s.Count);
        var result = new Dim[rank];
        for (var i = 0; i < rank; i++)
        {
            Dim? dim = null;
            foreach (var shape in shapes)
            {
                var j = i - (rank - shape.Count);
                if (j < 0)
                {
                    continue;
                }

                var d = shape[j];
                if (d.Size == 1)
                {
                    dim ??= d;
                    continue;
                }

                dim = dim is not { } current || current.Size == 1 ? d : current.SameAs(d) == true ? current : Dim.Unknown;
            }

            result[i] = dim ?? Dim.Of(1);
        }

        return result;
    }

    private static TensorType? InferMatMul(TensorType? a, TensorType? b)
    {
        if (a is null)
        {
            return null;
        }

        if (a.Shape is not { Count: >= 2 } sa || b?.Shape is not { Count: >= 2 } sb)
        {
            return new TensorType(a.ElementType, null);
        }

        var batch = BroadcastShapes([sa.Take(sa.Count - 2).ToArray(), sb.Take(sb.Count - 2).ToArray()]);
        return new TensorType(a.ElementType, [.. batch, sa[^2], sb[^1]]);
    }

    /// <summary>The Einsum's result; an ellipsis stands for as many axes as the operand ranks leave it.</summary>
    private TensorType InferEinsum(Node node, DataType type)
    {
        var shapes = node.Inputs.Select(i => i is null ? null : ShapeOf(i)).ToArray();
        var equation = EinsumEquation.Parse(node.StringAttribute("equation"), shapes.Select(s => s?.Count).ToArray());
        return new TensorType(type, equation?.OutputShape(shapes));
    }

    private static TensorType? InferTranspose(Node node, TensorType? input)
    {
        if (input?.Shape is not { } shape)
        {
            return input;
        }

        var perm = node.IntsAttribute("perm")?.ToArray() ?? Enumerable.Range(0, shape.Count).Reverse().Select(i => (long)i).ToArray();
        if (perm.Length != shape.Count || perm.Any(p => p < 0 || p >= shape.Count))
        {
            return new TensorType(input.ElementType, null);
        }

        return new TensorType(input.ElementType, perm.Select(p => shape[(int)p]).ToArray());
    }

    private IReadOnlyList<Dim>? InferReshape(Node node, IReadOnlyList<Dim>? input)
    {
        if (node.Input(1) is not { } shapeInput || ShapeVector(shapeInput) is not { } target)
        {
            return null;
        }

        var allowZero = node.IntAttribute("allowzero") == 1;
        var result = new Dim[target.Length];
        var inferred = -1;
        for (var i = 0; i < target.Length; i++)
        {
            var d = target[i];
            if (d.Size == 0 && !allowZero)
            {
                result[i] = input is not null && i < input.Count ? input[i] : Dim.Unknown;
            }
            else if (d.Size == -1)
            {
                inferred = i;
            }
            else
            {
                result[i] = d;
            }
        }

        if (inferred >= 0)
        {
            result[inferred] = Dim.Unknown;
            if (input is not null)
            {
                // The element count is preserved: −1 is the input's product over the others' product.
                var total = input.Aggregate(Dim.Of(1), Dim.Multiply);
                var rest = result.Where((_, i) => i != inferred).Aggregate(Dim.Of(1), Dim.Multiply);
                result[inferred] = Dim.Divide(total, rest);
            }
        }

        return result;
    }

    /// <summary>The axes of an Unsqueeze/Squeeze/Reduce node (attribute before opset 13, input after).</summary>
    public IReadOnlyList<long>? AxesOf(Node node)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (node.IntsAttribute("axes") is { } attribute)
        {
            return attribute;
        }

        return node.Input(1) is { } input ? ConstantOf(input)?.AsInt64() : null;
    }

    private IReadOnlyList<Dim>? InferSqueeze(Node node, IReadOnlyList<Dim>? input)
    {
        if (input is null)
        {
            return null;
        }

        if (AxesOf(node) is not { } axes)
        {
            return node.OpType == "Squeeze" && node.Input(1) is null && input.All(d => d.IsKnown)
                ? input.Where(d => d.Size != 1).ToArray()
                : null;
        }

        if (node.OpType == "Unsqueeze")
        {
            var rank = input.Count + axes.Count;
            var normalized = axes.Select(a => a < 0 ? a + rank : a).ToHashSet();
            var result = new List<Dim>(rank);
            var next = 0;
            for (var i = 0; i < rank; i++)
            {
                result.Add(normalized.Contains(i) ? Dim.Of(1) : next < input.Count ? input[next++] : Dim.Unknown);
            }

            return result;
        }

        var squeezed = axes.Select(a => a < 0 ? a + input.Count : a).ToHashSet();
        return input.Where((_, i) => !squeezed.Contains(i)).ToArray();
    }

    /// <summary>Tile: each dim times its repeat count (HF DeBERTa tiles its position projections to B·H rows).</summary>
    private TensorType? InferTile(Node node, TensorType? input)
    {
        if (input is null)
        {
            return null;
        }

        if (input.Shape is not { } shape || node.Input(1) is not { } repeatsInput || ShapeVector(repeatsInput) is not { } repeats || repeats.Length != shape.Count)
        {
            return new TensorType(input.ElementType, input.Shape?.Select(_ => Dim.Unknown).ToArray());
        }

        return new TensorType(input.ElementType, shape.Select((d, i) => Dim.Multiply(d, repeats[i])).ToArray());
    }

    private TensorType? InferExpand(Node node, TensorType? input)
    {
        if (input is null)
        {
            return null;
        }

        if (input.Shape is null || node.Input(1) is not { } shapeInput || ShapeVector(shapeInput) is not { } target)
        {
            return new TensorType(input.ElementType, null);
        }

        return new TensorType(input.ElementType, BroadcastShapes([input.Shape, target]));
    }

    private static List<int> ShapeRange(Node node, int rank)
    {
        var start = node.IntAttribute("start") ?? 0;
        var end = node.IntAttribute("end") ?? rank;
        start = Math.Clamp(start < 0 ? start + rank : start, 0, rank);
        end = Math.Clamp(end < 0 ? end + rank : end, 0, rank);
        return Enumerable.Range((int)start, (int)Math.Max(0, end - start)).ToList();
    }

    /// <summary>
    /// The entries of a 1-D (or scalar) integer tensor used as a shape, each a number or a
    /// symbolic dimension taken from some value's shape; null when not derivable.
    /// </summary>
    public Dim[]? ShapeVector(Value value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (_shapeVectors.TryGetValue(value, out var known))
        {
            return known;
        }

        if (_depth >= MaxEvaluationDepth || !_shapeVectorsInProgress.Add(value))
        {
            return null;
        }

        _depth++;
        try
        {
            var result = ComputeShapeVector(value);
            _shapeVectors[value] = result;
            return result;
        }
        finally
        {
            _depth--;
            _shapeVectorsInProgress.Remove(value);
        }
    }

    private Dim[]? ComputeShapeVector(Value value)
    {
        if (ConstantOf(value) is { } constant && constant.Dims.Count <= 1)
        {
            return constant.AsInt64().Select(Dim.Of).ToArray();
        }

        if (ComputeShapeVectorFromProducer(value) is { } computed)
        {
            return computed;
        }

        // Only the length is known: entries are unknown (never guessed).
        return TypeOf(value)?.Shape switch
        {
            [] => [Dim.Unknown],
            [{ Size: { } length }] when length <= 64 => Enumerable.Repeat(Dim.Unknown, (int)length).ToArray(),
            _ => null,
        };
    }

    private Dim[]? ComputeShapeVectorFromProducer(Value value)
    {
        if (value.Producer is not { } node || (node.Domain.Length != 0 && node.Domain != "ai.onnx"))
        {
            return null;
        }

        switch (node.OpType)
        {
            case "Shape":
                return ShapeOf(node.Input(0)!) is { } shape ? ShapeRange(node, shape.Count).Select(i => shape[i]).ToArray() : null;
            case "Identity" or "Cast" or "Unsqueeze" or "Squeeze" or "Reshape":
                return ShapeVector(node.Input(0)!);
            case "Where":
                return WhereVector(node);
            case "Concat":
                var parts = node.Inputs.Select(v => v is null ? null : ShapeVector(v)).ToList();
                return parts.Any(p => p is null) ? null : parts.SelectMany(p => p!).ToArray();
            case "Gather":
                if (ShapeVector(node.Input(0)!) is not { } data || ConstantOf(node.Input(1)!) is not { } indices)
                {
                    return null;
                }

                var picked = indices.AsInt64().Select(i => i < 0 ? i + data.Length : i).ToArray();
                return picked.All(i => i >= 0 && i < data.Length) ? picked.Select(i => data[i]).ToArray() : null;
            case "Slice":
                return SliceVector(node);
            case "Add" or "Sub" or "Mul" or "Div":
                if ((node.OpType == "Div" && ElementTypeOf(value) is not (DataType.Int64 or DataType.Int32)) ||
                    ShapeVector(node.Input(0)!) is not { } left || ShapeVector(node.Input(1)!) is not { } right ||
                    (left.Length != right.Length && left.Length != 1 && right.Length != 1))
                {
                    return null;
                }

                var length = Math.Max(left.Length, right.Length);
                // Div only where the quotient is exact (BLOOM's B·H // H), so integer truncation cannot matter.
                Func<Dim, Dim, Dim> op = node.OpType switch { "Add" => Dim.Add, "Sub" => Dim.Subtract, "Div" => Dim.Divide, _ => Dim.Multiply };
                return Enumerable.Range(0, length).Select(i => op(left[left.Length == 1 ? 0 : i], right[right.Length == 1 ? 0 : i])).ToArray();
            case "Mod" when ElementTypeOf(value) is DataType.Int64 or DataType.Int32 && node.IntAttribute("fmod") is null or 0:
                // Known sizes only (torchvision's padding to whole windows: (w − W % w) % w); both non-negative, so the sign rule of
                // integer Mod does not matter.
                if (ShapeVector(node.Input(0)!) is not { } dividends || ShapeVector(node.Input(1)!) is not { } divisors ||
                    (dividends.Length != divisors.Length && dividends.Length != 1 && divisors.Length != 1))
                {
                    return null;
                }

                return Enumerable.Range(0, Math.Max(dividends.Length, divisors.Length))
                    .Select(i => (dividends[dividends.Length == 1 ? 0 : i].Size, divisors[divisors.Length == 1 ? 0 : i].Size) switch
                    {
                        ({ } a, { } b) when a >= 0 && b > 0 => Dim.Of(a % b),
                        _ => Dim.Unknown,
                    }).ToArray();
            default:
                return null;
        }
    }

    /// <summary>Where(Equal(x, -1), ones, x) as exporters write Expand shapes: entries of x that cannot be −1 pass.</summary>
    private Dim[]? WhereVector(Node node)
    {
        if (node.Input(0)?.Producer is not { OpType: "Equal" } equal || ShapeVector(node.Input(1)!) is not { } whenTrue ||
            ShapeVector(node.Input(2)!) is not { } whenFalse)
        {
            return null;
        }

        // The sentinel side is all numbers (a scalar or one per entry, e.g. ConstantOfShape(…)·−1); the other is tested.
        static bool AllNumbers(Dim[]? vector) => vector is not null && vector.All(d => d.IsKnown);
        var (tested, sentinels) = (ShapeVector(equal.Input(0)!), ShapeVector(equal.Input(1)!)) switch
        {
            (var left, var right) when AllNumbers(right) && left is not null => (left, right),
            (var left, var right) when AllNumbers(left) && right is not null => (right, left),
            _ => (null, null),
        };
        if (tested is null || sentinels is null)
        {
            return null;
        }

        var length = new[] { tested.Length, sentinels.Length, whenTrue.Length, whenFalse.Length }.Max();
        Dim At(Dim[] vector, int i) => vector.Length == 1 ? vector[0] : i < vector.Length ? vector[i] : Dim.Unknown;
        return Enumerable.Range(0, length).Select(i => (At(tested, i), At(sentinels, i).Size) switch
        {
            (_, null) => Dim.Unknown,
            ({ Size: { } size }, { } sentinel) => size == sentinel ? At(whenTrue, i) : At(whenFalse, i),
            ({ Symbol: not null, IsNonNegative: true }, < 0) => At(whenFalse, i),
            _ => Dim.Unknown,
        }).ToArray();
    }

    private Dim[]? SliceVector(Node node)
    {
        if (ShapeVector(node.Input(0)!) is not { } data)
        {
            return null;
        }

        long[]? starts, ends, steps = null;
        if (node.IntsAttribute("starts") is { } startsAttribute)
        {
            starts = startsAttribute.ToArray();
            ends = node.IntsAttribute("ends")?.ToArray();
        }
        else
        {
            starts = node.Input(1) is { } s ? ConstantOf(s)?.AsInt64() : null;
            ends = node.Input(2) is { } e ? ConstantOf(e)?.AsInt64() : null;
            steps = node.Input(4) is { } st ? ConstantOf(st)?.AsInt64() : null;
        }

        if (starts is not { Length: 1 } || ends is not { Length: 1 } || (steps is not null && steps is not [1]))
        {
            return null;
        }

        var n = data.Length;
        var start = Math.Clamp(starts[0] < 0 ? starts[0] + n : starts[0], 0, n);
        var end = Math.Clamp(ends[0] < 0 ? ends[0] + n : ends[0], 0, n);
        return data.Skip((int)start).Take((int)Math.Max(0, end - start)).ToArray();
    }

    /// <summary>
    /// The value of <paramref name="value"/> when it is a constant or folds from constants (and
    /// static shapes) through small arithmetic; null otherwise. Never reads external data.
    /// </summary>
    public ConstantTensor? ConstantOf(Value value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (_constants.TryGetValue(value, out var known))
        {
            return known;
        }

        if (_depth >= MaxEvaluationDepth || !_constantsInProgress.Add(value))
        {
            return null;
        }

        _depth++;
        try
        {
            var result = ComputeConstant(value);
            _constants[value] = result;
            return result;
        }
        finally
        {
            _depth--;
            _constantsInProgress.Remove(value);
        }
    }

    /// <summary>The single element of a constant with one element, or null.</summary>
    public double? ScalarOf(Value value) => ConstantOf(value) is { IsScalar: true } c ? c.Data[0] : null;

    private ConstantTensor? ComputeConstant(Value value)
    {
        if (value.Initializer is { } initializer)
        {
            return value.IsGraphInput ? null : ConstantTensor.FromProto(initializer);
        }

        if (value.Producer is not { } node || (node.Domain.Length != 0 && node.Domain != "ai.onnx") || value != node.Output(0))
        {
            return null;
        }

        return node.OpType switch
        {
            "Constant" => FromConstantNode(node),
            "Identity" => Input(node, 0),
            "Cast" => Input(node, 0) is { } c ? Map(c, (DataType)(node.IntAttribute("to") ?? 0), v => v) : null,
            "CastLike" => Input(node, 0) is { } c && node.Input(1) is { } like && ElementTypeOf(like) is var t && t != DataType.Undefined
                ? Map(c, t, v => v) : null,
            "Sqrt" => Input(node, 0) is { } c ? Map(c, c.ElementType, Math.Sqrt) : null,
            "Reciprocal" => Input(node, 0) is { } c ? Map(c, c.ElementType, v => 1 / v) : null,
            "Neg" => Input(node, 0) is { } c ? Map(c, c.ElementType, v => -v) : null,
            "Add" => Binary(node, (a, b) => a + b),
            "Sub" => Binary(node, (a, b) => a - b),
            "Mul" => Binary(node, (a, b) => a * b),
            "Div" => Binary(node, (a, b) => a / b),
            "Pow" => Binary(node, Math.Pow),
            "Unsqueeze" or "Squeeze" or "Reshape" => Input(node, 0) is { } c && ShapeOf(value) is { } s && s.All(d => d.IsKnown)
                ? c with { Dims = s.Select(d => d.Size!.Value).ToArray() } : null,
            "Shape" or "Gather" or "Slice" or "Concat" => ShapeVector(value) is { } dims && dims.All(d => d.IsKnown)
                && ElementTypeOf(value) is DataType.Int64 or DataType.Undefined
                ? ConstantTensor.Int64s(dims.Select(d => d.Size!.Value).ToArray()) : null,
            "ConstantOfShape" => FromConstantOfShape(node),
            _ => null,
        };
    }

    private ConstantTensor? Input(Node node, int index) => node.Input(index) is { } v ? ConstantOf(v) : null;

    private static ConstantTensor Map(ConstantTensor c, DataType type, Func<double, double> f) =>
        new(type, c.Dims, c.Data.Select(v => ElementTypes.Round(f(v), type)).ToArray());

    private ConstantTensor? Binary(Node node, Func<double, double, double> f)
    {
        if (Input(node, 0) is not { } a || Input(node, 1) is not { } b)
        {
            return null;
        }

        // Elementwise with one side a single element covers scale chains; full broadcasting is not needed.
        if (a.IsScalar && b.IsScalar)
        {
            var dims = a.Dims.Count >= b.Dims.Count ? a.Dims : b.Dims;
            return new ConstantTensor(a.ElementType, dims, [ElementTypes.Round(f(a.Data[0], b.Data[0]), a.ElementType)]);
        }

        if (b.IsScalar)
        {
            return Map(a, a.ElementType, v => f(v, b.Data[0]));
        }

        if (a.IsScalar)
        {
            return new ConstantTensor(a.ElementType, b.Dims, b.Data.Select(v => ElementTypes.Round(f(a.Data[0], v), a.ElementType)).ToArray());
        }

        if (a.Dims.SequenceEqual(b.Dims))
        {
            return new ConstantTensor(a.ElementType, a.Dims, a.Data.Zip(b.Data, (x, y) => ElementTypes.Round(f(x, y), a.ElementType)).ToArray());
        }

        return null;
    }

    private static ConstantTensor? FromConstantNode(Node node)
    {
        var attribute = node.Proto.Attribute.FirstOrDefault();
        if (attribute is null || node.Proto.Attribute.Count != 1)
        {
            return null;
        }

        return attribute.Name switch
        {
            "value" => attribute.T is { } t ? ConstantTensor.FromProto(t) : null,
            "value_float" => ConstantTensor.Scalar(DataType.Float, attribute.F),
            "value_floats" => new ConstantTensor(DataType.Float, [attribute.Floats.Count], attribute.Floats.Select(f => (double)f).ToArray()),
            "value_int" => ConstantTensor.Scalar(DataType.Int64, attribute.I),
            "value_ints" => ConstantTensor.Int64s(attribute.Ints),
            _ => null,
        };
    }

    private ConstantTensor? FromConstantOfShape(Node node)
    {
        if (ShapeVector(node.Input(0)!) is not { } dims || !dims.All(d => d.IsKnown))
        {
            return null;
        }

        var count = dims.Aggregate(1L, (p, d) => p * d.Size!.Value);
        if (count > ConstantTensor.MaxElements)
        {
            return null;
        }

        var fill = node.Attribute("value")?.T is { } t ? ConstantTensor.FromProto(t) : ConstantTensor.Scalar(DataType.Float, 0);
        if (fill is not { IsScalar: true })
        {
            return null;
        }

        return new ConstantTensor(fill.ElementType, dims.Select(d => d.Size!.Value).ToArray(), Enumerable.Repeat(fill.Data[0], (int)count).ToArray());
    }
}
