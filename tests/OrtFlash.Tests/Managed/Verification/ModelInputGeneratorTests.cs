using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OrtFlash.Verification;

namespace OrtFlash.Tests.Managed.Verification;

[TestFixture]
public sealed class ModelInputGeneratorTests
{
    private static ModelInputSpec Spec(string name, TensorElementType type, params string[] dims) =>
        new(name, type, dims.Select(d => long.TryParse(d, out long size) ? InputDimension.Fixed(size) : InputDimension.Symbolic(d == "?" ? "" : d)).ToArray());

    private static long[] Longs(GeneratedInput input) => input.ElementType switch
    {
        TensorElementType.Int32 => input.Value.GetTensorDataAsSpan<int>().ToArray().Select(v => (long)v).ToArray(),
        TensorElementType.Bool => input.Value.GetTensorDataAsSpan<bool>().ToArray().Select(v => v ? 1L : 0L).ToArray(),
        TensorElementType.Float => input.Value.GetTensorDataAsSpan<float>().ToArray().Select(v => (long)v).ToArray(),
        _ => input.Value.GetTensorDataAsSpan<long>().ToArray(),
    };

    private static (ModelInputGenerator Generator, OrtFlashSession Session) Open(string fileName)
    {
        var source = ModelSource.FromFile(TestModels.PathOf(fileName));
        var session = source.OpenSession(TestModels.Cpu);
        return (ModelInputGenerator.ForSession(session.Session, source.Model), session);
    }

    public static IEnumerable<TestCaseData> EveryModel() =>
        TestModels.FileNames().Select(f => new TestCaseData(f).SetName($"EveryModelRunsOnGeneratedInputs({f})"));

    [TestCaseSource(nameof(EveryModel))]
    public void EveryModelRunsOnGeneratedInputs(string fileName)
    {
        var (generator, session) = Open(fileName);
        using var _ = session;
        foreach (int sequenceLength in new[] { 5, 12 })
        {
            // BLOOM's cache is (batch × heads, D, P): the heads come from the manifest, as a user gives them with --dim.
            var options = new InputGenerationOptions { SequenceLength = sequenceLength };
            using var inputs = generator.Generate(options with
            {
                DimensionOverrides = new Dictionary<string, long> { ["batch_x_heads"] = options.BatchSize * TestModels.KvHeadsOf(fileName) },
            });
            foreach (var input in inputs)
            {
                var declared = session.Session.InputMetadata[input.Name];
                for (int axis = 0; axis < declared.Dimensions.Length; axis++)
                {
                    long expected = declared.Dimensions[axis] >= 0 ? declared.Dimensions[axis]
                        : declared.SymbolicDimensions[axis] is { Length: > 0 } symbol ? inputs.DimensionSizes[symbol]
                        : input.Shape[axis];
                    Assert.That(input.Shape[axis], Is.EqualTo(expected), $"{input} axis {axis}: one size per symbolic name, fixed sizes kept");
                }

                if (input.Role == InputRole.PaddingMask)
                {
                    long keys = input.Shape[^1];
                    var entry1 = Longs(input)[(int)keys..(int)(2 * keys)];
                    Assert.That(entry1.Count(v => v == 0), Is.InRange(1, keys - 1), $"{input}: entry 1 has padding and keeps a key");
                }
            }

            using var runOptions = new RunOptions();
            using var outputs = session.Session.Run(runOptions, inputs.Names, inputs.Values, session.Session.OutputNames);
            for (int i = 0; i < outputs.Count; i++)
            {
                string name = session.Session.OutputNames[i];
                var declared = session.Session.OutputMetadata[name];
                var shape = outputs[i].GetTensorTypeAndShape().Shape;
                Assert.That(shape, Has.Length.EqualTo(declared.Dimensions.Length), $"rank of {name}");
                for (int axis = 0; axis < shape.Length; axis++)
                {
                    if (declared.Dimensions[axis] >= 0)
                    {
                        Assert.That(shape[axis], Is.EqualTo(declared.Dimensions[axis]), $"{name} axis {axis} (fixed)");
                    }
                    else if (inputs.DimensionSizes.TryGetValue(declared.SymbolicDimensions[axis], out long size))
                    {
                        Assert.That(shape[axis], Is.EqualTo(size), $"{name} axis {axis} ({declared.SymbolicDimensions[axis]})");
                    }
                }

                var values = outputs[i].GetTensorTypeAndShape().ElementDataType == TensorElementType.Float16
                    ? outputs[i].GetTensorDataAsSpan<Float16>().ToArray().Select(v => (float)v).ToArray()
                    : outputs[i].GetTensorDataAsSpan<float>().ToArray();
                Assert.That(values.All(float.IsFinite), Is.True, $"{name} at sequence length {sequenceLength} is finite (no row fully masked)");
            }
        }
    }

    [Test]
    public void CacheModelsGetAMaskOverPastAndNewTokens()
    {
        var (generator, session) = Open("llama-opset17.onnx");
        using var _ = session;
        using var inputs = generator.Generate(new InputGenerationOptions { SequenceLength = 6, PastSequenceLength = 4 });
        Assert.Multiple(() =>
        {
            Assert.That(generator.HasCache, Is.True);
            Assert.That(inputs["input_ids"].Shape, Is.EqualTo(new long[] { 2, 6 }));
            Assert.That(inputs["attention_mask"].Shape, Is.EqualTo(new long[] { 2, 10 }));
            Assert.That(inputs["past_key_0"].Shape, Is.EqualTo(new long[] { 2, 2, 4, 32 }));
            Assert.That(inputs.DimensionSizes["total_sequence"], Is.EqualTo(10));
            Assert.That(generator.DimensionRolesOf("attention_mask"), Is.EqualTo(new[] { DimensionRole.Batch, DimensionRole.TotalSequence }));
        });
    }

    [Test]
    public void MasksPadLaterBatchEntriesAtTheEndAndKeepEntryZeroWhole()
    {
        var (generator, session) = Open("bert-opset14.onnx");
        using var _ = session;
        using var inputs = generator.Generate(new InputGenerationOptions { BatchSize = 3, SequenceLength = 9 });
        var mask = Longs(inputs["attention_mask"]);
        Assert.Multiple(() =>
        {
            Assert.That(mask[..9], Is.All.EqualTo(1), "entry 0 unpadded");
            Assert.That(mask[9..18], Is.EqualTo(new long[] { 1, 1, 1, 1, 1, 1, 0, 0, 0 }), "entry 1: 9 / 3 = 3 padded at the end");
            Assert.That(mask[18..], Is.EqualTo(new long[] { 1, 1, 1, 0, 0, 0, 0, 0, 0 }), "entry 2: 6 padded, key 0..2 kept");
        });
    }

    [Test]
    public void PaddingCanGoAtTheStart()
    {
        var generator = new ModelInputGenerator([Spec("attention_mask", TensorElementType.Int64, "batch", "sequence")]);
        using var inputs = generator.Generate(new InputGenerationOptions { SequenceLength = 6, Padding = PaddingSide.Start });
        Assert.That(Longs(inputs["attention_mask"]), Is.EqualTo(new long[] { 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1 }));
    }

    [Test]
    public void EveryBatchEntryKeepsAtLeastOneKey()
    {
        var generator = new ModelInputGenerator([Spec("attention_mask", TensorElementType.Int64, "batch", "sequence")]);
        using var four = generator.Generate(new InputGenerationOptions { BatchSize = 8, SequenceLength = 4 });
        using var one = generator.Generate(new InputGenerationOptions { BatchSize = 3, SequenceLength = 1 });
        var mask = Longs(four["attention_mask"]);
        Assert.Multiple(() =>
        {
            Assert.That(Enumerable.Range(0, 8).Select(b => mask[(b * 4)..((b + 1) * 4)].Sum()), Is.EqualTo(new long[] { 4, 3, 2, 1, 1, 1, 1, 1 }));
            Assert.That(Longs(one["attention_mask"]), Is.All.EqualTo(1), "a single key is never padded");
        });
    }

    [Test]
    public void BoolMasksPadWithFalseAndKeyPaddingMasksWithTrue()
    {
        var generator = new ModelInputGenerator(
        [
            Spec("attention_mask", TensorElementType.Bool, "batch", "sequence"),
            Spec("key_padding_mask", TensorElementType.Bool, "batch", "sequence"),
            Spec("encoder_attention_mask", TensorElementType.Float, "batch", "encoder_sequence"),
            Spec("src_mask", TensorElementType.Int32, "batch", "sequence"),
        ]);
        using var inputs = generator.Generate(new InputGenerationOptions { SequenceLength = 3 });
        Assert.Multiple(() =>
        {
            Assert.That(Longs(inputs["attention_mask"]), Is.EqualTo(new long[] { 1, 1, 1, 1, 1, 0 }), "true = keep");
            Assert.That(Longs(inputs["key_padding_mask"]), Is.EqualTo(new long[] { 0, 0, 0, 0, 0, 1 }), "true = padded");
            Assert.That(Longs(inputs["encoder_attention_mask"]), Is.EqualTo(new long[] { 1, 1, 1, 1, 1, 0 }), "float 1.0 = keep");
            Assert.That(Longs(inputs["src_mask"]), Is.EqualTo(new long[] { 1, 1, 1, 1, 1, 0 }), "int32");
            Assert.That(generator.RoleOf("key_padding_mask"), Is.EqualTo(InputRole.PaddingMask));
        });
    }

    [Test]
    public void SequenceLengthInputsAreLengthsNotTokenIds()
    {
        // ONNX Attention-24's nonpad_kv_seqlen: one length per batch entry, at most the key length.
        var generator = new ModelInputGenerator(
        [
            Spec("query", TensorElementType.Float, "batch", "sequence", "hidden"),
            Spec("nonpad_kv_seqlen", TensorElementType.Int64, "batch"),
        ]);
        using var inputs = generator.Generate(new InputGenerationOptions { SequenceLength = 5 });
        Assert.Multiple(() =>
        {
            Assert.That(generator.RoleOf("nonpad_kv_seqlen"), Is.EqualTo(InputRole.Length));
            Assert.That(Longs(inputs["nonpad_kv_seqlen"]), Is.All.EqualTo(5));
        });
    }

    [Test]
    public void TokenIdsStayBelowTheEmbeddingTableRows()
    {
        var (generator, session) = Open("t5-opset17.onnx");
        using var _ = session;
        using var inputs = generator.Generate(new InputGenerationOptions { SequenceLength = 64 });
        var ids = Longs(inputs["input_ids"]).Concat(Longs(inputs["decoder_input_ids"])).ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(ids, Is.All.InRange(0, 127));
            Assert.That(ids.Max(), Is.GreaterThan(64), "spread over the whole table, not a small fallback range");
            Assert.That(inputs["input_ids"].Description, Does.Contain("[0, 128)"));
        });
    }

    [Test]
    public void WithoutTheModelTokenIdsUseASmallRange()
    {
        var generator = new ModelInputGenerator(
        [
            Spec("input_ids", TensorElementType.Int64, "batch", "sequence"),
            Spec("token_type_ids", TensorElementType.Int32, "batch", "sequence"),
        ]);
        using var inputs = generator.Generate(new InputGenerationOptions { SequenceLength = 50 });
        Assert.Multiple(() =>
        {
            Assert.That(Longs(inputs["input_ids"]), Is.All.InRange(0, 15));
            Assert.That(Longs(inputs["token_type_ids"]), Is.All.InRange(0, 1));
            Assert.That(inputs["input_ids"].Description, Does.Contain("no embedding table found"));
        });
    }

    [Test]
    public void UnnamedDimensionsFollowTheirPosition()
    {
        var generator = new ModelInputGenerator(
        [
            Spec("input_ids", TensorElementType.Int64, "?", "?"),
            Spec("attention_mask", TensorElementType.Int64, "?", "?"),
            Spec("past_key_values.0.key", TensorElementType.Float, "?", "4", "?", "8"),
        ]);
        using var inputs = generator.Generate(new InputGenerationOptions { SequenceLength = 5, PastSequenceLength = 2 });
        Assert.Multiple(() =>
        {
            Assert.That(generator.HasCache, Is.True);
            Assert.That(inputs["input_ids"].Shape, Is.EqualTo(new long[] { 2, 5 }));
            Assert.That(inputs["attention_mask"].Shape, Is.EqualTo(new long[] { 2, 7 }), "mask of a cache model: past + new");
            Assert.That(inputs["past_key_values.0.key"].Shape, Is.EqualTo(new long[] { 2, 4, 2, 8 }));
        });
    }

    [Test]
    public void ExporterDimensionNamesAreRecognised()
    {
        var generator = new ModelInputGenerator(
        [
            Spec("input_ids", TensorElementType.Int64, "batch_size", "sequence_length"),
            Spec("attention_mask", TensorElementType.Int64, "batch_size", "past_sequence_length + 1"),
            Spec("position_ids", TensorElementType.Int64, "batch_size", "sequence_length"),
            Spec("past_key_values.0.value", TensorElementType.Float16, "batch_size", "2", "past_sequence_length", "8"),
            Spec("encoder_hidden_states", TensorElementType.BFloat16, "batch_size", "encoder_sequence_length", "16"),
            Spec("decoder_input_ids", TensorElementType.Int64, "batch_size", "decoder_sequence_length"),
            Spec("past_key_values.0.encoder.key", TensorElementType.Float, "batch_size", "2", "encoder_sequence_length_out", "8"),
        ]);
        using var inputs = generator.Generate(new InputGenerationOptions { SequenceLength = 4, PastSequenceLength = 3 });
        Assert.Multiple(() =>
        {
            Assert.That(inputs["attention_mask"].Shape, Is.EqualTo(new long[] { 2, 7 }), "'past + 1' means past + new");
            Assert.That(inputs["past_key_values.0.value"].Shape, Is.EqualTo(new long[] { 2, 2, 3, 8 }));
            Assert.That(inputs["encoder_hidden_states"].Shape, Is.EqualTo(new long[] { 2, 4, 16 }));
            Assert.That(inputs["decoder_input_ids"].Shape, Is.EqualTo(new long[] { 2, 2 }), "decoder length: max(1, S − 2)");
            Assert.That(inputs["past_key_values.0.encoder.key"].Shape, Is.EqualTo(new long[] { 2, 2, 4, 8 }), "a cross-attention cache spans the encoder");
            Assert.That(Longs(inputs["position_ids"]), Is.EqualTo(new long[] { 3, 4, 5, 6, 3, 4, 5, 6 }), "positions continue after the past");
        });
    }

    [Test]
    public void CachePositionAndLengthScalarsAndFlagsFollowThePast()
    {
        var generator = new ModelInputGenerator(
        [
            Spec("cache_position", TensorElementType.Int64, "?"),
            Spec("past_sequence_length", TensorElementType.Int32),
            Spec("total_sequence_length", TensorElementType.Int64, "1"),
            Spec("use_cache_branch", TensorElementType.Bool, "1"),
            Spec("input_lengths", TensorElementType.Int32, "batch"),
        ]);
        using var withPast = generator.Generate(new InputGenerationOptions { SequenceLength = 3, PastSequenceLength = 5 });
        using var noPast = generator.Generate(new InputGenerationOptions { SequenceLength = 3, PastSequenceLength = 0 });
        Assert.Multiple(() =>
        {
            Assert.That(Longs(withPast["cache_position"]), Is.EqualTo(new long[] { 5, 6, 7 }));
            Assert.That(Longs(withPast["past_sequence_length"]), Is.EqualTo(new long[] { 5 }));
            Assert.That(withPast["past_sequence_length"].Shape, Is.Empty, "rank 0 stays rank 0");
            Assert.That(Longs(withPast["total_sequence_length"]), Is.EqualTo(new long[] { 8 }));
            Assert.That(Longs(withPast["use_cache_branch"]), Is.EqualTo(new long[] { 1 }));
            Assert.That(Longs(noPast["use_cache_branch"]), Is.EqualTo(new long[] { 0 }));
            Assert.That(Longs(withPast["input_lengths"]), Is.EqualTo(new long[] { 3, 3 }));
        });
    }

    [Test]
    public void FloatInputsAreUniformInMinusOneToOneForEveryFloatType()
    {
        var generator = new ModelInputGenerator(
        [
            Spec("a", TensorElementType.Float, "batch", "sequence", "8"),
            Spec("b", TensorElementType.Float16, "batch", "sequence", "8"),
            Spec("c", TensorElementType.BFloat16, "batch", "sequence", "8"),
            Spec("d", TensorElementType.Double, "batch", "sequence", "8"),
        ]);
        using var inputs = generator.Generate(new InputGenerationOptions { SequenceLength = 32 });
        double[][] all =
        [
            inputs["a"].Value.GetTensorDataAsSpan<float>().ToArray().Select(v => (double)v).ToArray(),
            inputs["b"].Value.GetTensorDataAsSpan<Float16>().ToArray().Select(v => (double)(float)v).ToArray(),
            inputs["c"].Value.GetTensorDataAsSpan<BFloat16>().ToArray().Select(v => (double)(float)v).ToArray(),
            inputs["d"].Value.GetTensorDataAsSpan<double>().ToArray(),
        ];
        foreach (var values in all)
        {
            Assert.That(values, Has.Length.EqualTo(2 * 32 * 8));
            Assert.That(values, Is.All.InRange(-1.0, 1.0));
            Assert.That(values.Min(), Is.LessThan(-0.9));
            Assert.That(values.Max(), Is.GreaterThan(0.9));
        }
    }

    [Test]
    public void TheSameSeedGivesTheSameInputsAndAnotherSeedOthers()
    {
        var generator = new ModelInputGenerator([Spec("x", TensorElementType.Float, "batch", "sequence"), Spec("input_ids", TensorElementType.Int64, "batch", "sequence")]);
        using var first = generator.Generate(new InputGenerationOptions { Seed = 7 });
        using var again = generator.Generate(new InputGenerationOptions { Seed = 7 });
        using var other = generator.Generate(new InputGenerationOptions { Seed = 8 });
        var x = first["x"].Value.GetTensorDataAsSpan<float>().ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(again["x"].Value.GetTensorDataAsSpan<float>().ToArray(), Is.EqualTo(x));
            Assert.That(Longs(again["input_ids"]), Is.EqualTo(Longs(first["input_ids"])));
            Assert.That(other["x"].Value.GetTensorDataAsSpan<float>().ToArray(), Is.Not.EqualTo(x));
        });
    }

    [Test]
    public void DimensionOverridesWinOverEveryRule()
    {
        var generator = new ModelInputGenerator(
        [
            Spec("pixel_values", TensorElementType.Float, "batch", "3", "height", "width"),
            Spec("other", TensorElementType.Float, "batch", "height"),
        ]);
        using var inputs = generator.Generate(new InputGenerationOptions
        {
            BatchSize = 1,
            DimensionOverrides = new Dictionary<string, long> { ["height"] = 4, ["width"] = 6 },
        });
        Assert.Multiple(() =>
        {
            Assert.That(inputs["pixel_values"].Shape, Is.EqualTo(new long[] { 1, 3, 4, 6 }));
            Assert.That(inputs["other"].Shape, Is.EqualTo(new long[] { 1, 4 }));
        });
    }

    [Test]
    public void ADimensionCountingHeadsMustBeGivenItsSize()
    {
        var generator = new ModelInputGenerator(
        [
            Spec("input_ids", TensorElementType.Int64, "batch", "sequence"),
            Spec("past_key_0", TensorElementType.Float, "batch_x_heads", "16", "past_sequence"),
        ]);
        Assert.That(generator.DimensionRolesOf("past_key_0"), Is.EqualTo(new[] { DimensionRole.GivenSize, DimensionRole.Fixed, DimensionRole.PastSequence }));
        var missing = Assert.Throws<NotSupportedException>(() => generator.Generate());
        Assert.That(missing!.Message, Does.Contain("'batch_x_heads'").And.Contain("'past_key_0'").And.Contain("--dim batch_x_heads="));

        using var inputs = generator.Generate(new InputGenerationOptions { DimensionOverrides = new Dictionary<string, long> { ["batch_x_heads"] = 8 } });
        Assert.That(inputs["past_key_0"].Shape, Is.EqualTo(new long[] { 8, 16, 3 }));
    }

    [Test]
    public void InputsThatCannotBeGeneratedAreRefusedByName()
    {
        Assert.Multiple(() =>
        {
            var text = Assert.Throws<NotSupportedException>(() => _ = new ModelInputGenerator([Spec("prompt", TensorElementType.String, "batch")]));
            Assert.That(text!.Message, Does.Contain("'prompt'").And.Contain("String"));
            var sequence = Assert.Throws<NotSupportedException>(() => _ = new ModelInputGenerator([new ModelInputSpec("items", TensorElementType.Float, [], IsTensor: false)]));
            Assert.That(sequence!.Message, Does.Contain("'items'").And.Contain("not a tensor"));
            Assert.Throws<ArgumentOutOfRangeException>(() => new ModelInputGenerator([]).Generate(new InputGenerationOptions { SequenceLength = 0 }));
        });
    }
}
