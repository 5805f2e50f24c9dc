using Microsoft.ML.OnnxRuntime;

namespace OrtFlash.Tests.CustomOp;

/// <summary>Inputs and attributes outside the op contract fail with a message naming what is wrong.</summary>
[TestFixture]
public sealed class FlashAttentionOpErrorTests
{
    private static string RunExpectingFailure(AttentionCase c, IReadOnlyList<string>? inputNames = null)
    {
        var error = Assert.Throws<OnnxRuntimeException>(() => OpRunner.RunFused(c, inputNames));
        return error!.Message;
    }

    [Test]
    public void HeadDimensionMismatchNamesBothShapes()
    {
        var message = RunExpectingFailure(CaseFactory.Make(1, [1, 2, 8, 64], [1, 2, 8, 32], [1, 2, 8, 32]));
        Assert.That(message, Does.Contain("head dimension of K (32) does not match Q (64)"));
        Assert.That(message, Does.Contain("Q (1, 2, 8, 64)").And.Contain("K (1, 2, 8, 32)"));
    }

    [Test]
    public void BatchMismatchNamesTheShapes()
    {
        var message = RunExpectingFailure(CaseFactory.Make(2, [2, 2, 8, 16], [1, 2, 8, 16], [1, 2, 8, 16]));
        Assert.That(message, Does.Contain("batch dimension differs").And.Contain("Q (2, 2, 8, 16)").And.Contain("K (1, 2, 8, 16)"));
    }

    [Test]
    public void QueryHeadsMustBeAMultipleOfKvHeads()
    {
        var message = RunExpectingFailure(CaseFactory.Make(3, [1, 6, 8, 16], [1, 4, 8, 16], [1, 4, 8, 16]));
        Assert.That(message, Does.Contain("query heads (6) must be a multiple of key/value heads (4)"));
    }

    [Test]
    public void ValueMustMatchKeyHeadsAndLength()
    {
        var message = RunExpectingFailure(CaseFactory.Make(4, [1, 2, 8, 16], [1, 2, 8, 16], [1, 2, 9, 16]));
        Assert.That(message, Does.Contain("V must have the heads and sequence length of K").And.Contain("V (1, 2, 9, 16)"));
    }

    [Test]
    public void RanksMustAgree()
    {
        var message = RunExpectingFailure(CaseFactory.Make(5, [1, 2, 8, 16], [2, 8, 16], [2, 8, 16]));
        Assert.That(message, Does.Contain("input K must have the same rank as Q"));
        message = RunExpectingFailure(CaseFactory.Make(6, [8, 16], [8, 16], [8, 16]));
        Assert.That(message, Does.Contain("input Q must have rank 4 (B, H, S, D) or rank 3 (N, S, D), got Q (8, 16)"));
    }

    [TestCase(new long[] { 1, 2, 8, 7 }, TestName = "BiasWrongKeyLength")]
    [TestCase(new long[] { 3, 1, 1, 8 }, TestName = "BiasWrongBatch")]
    [TestCase(new long[] { 1, 1, 1, 1, 8 }, TestName = "BiasRankTooHigh")]
    public void BiasThatDoesNotBroadcastIsRejected(long[] biasShape)
    {
        var message = RunExpectingFailure(CaseFactory.Make(7, [1, 2, 8, 16], [1, 2, 8, 16], [1, 2, 8, 16], bias: biasShape));
        Assert.That(message, Does.Contain("input bias " + ShapeText(biasShape)).And.Contain("(1, 2, 8, 8)"));
    }

    [Test]
    public void KeepThatDoesNotBroadcastIsRejected()
    {
        var message = RunExpectingFailure(CaseFactory.Make(8, [1, 2, 8, 16], [1, 2, 8, 16], [1, 2, 8, 16], keep: [1, 3, 8, 8]));
        Assert.That(message, Does.Contain("input keep (1, 3, 8, 8) does not broadcast to the scores (1, 2, 8, 8)"));
    }

    [Test]
    public void RankThreeMaskMayNotAddAHeadAxis()
    {
        var message = RunExpectingFailure(CaseFactory.Make(9, [2, 8, 16], [2, 8, 16], [2, 8, 16], bias: [1, 1, 8, 8]));
        Assert.That(message, Does.Contain("input bias (1, 1, 8, 8) has a higher rank than the scores (2, 8, 8)"));
    }

    [Test]
    public void InvalidCausalValueFailsSessionCreation()
    {
        var c = CaseFactory.Make(10, [1, 1, 4, 16], [1, 1, 4, 16], [1, 1, 4, 16], causal: 3);
        var error = Assert.Throws<OnnxRuntimeException>(() => OpRunner.RunFused(c));
        Assert.That(error!.Message, Does.Contain("attribute causal must be 0 (none), 1 (upper-left) or 2 (lower-right), got 3"));
    }

    [Test]
    public void InvalidMaskedRowsValueFailsSessionCreation()
    {
        var c = CaseFactory.Make(11, [1, 1, 4, 16], [1, 1, 4, 16], [1, 1, 4, 16], maskedRows: "uniform");
        var error = Assert.Throws<OnnxRuntimeException>(() => OpRunner.RunFused(c));
        Assert.That(error!.Message, Does.Contain("attribute masked_rows must be \"zero\" or \"nan\", got \"uniform\""));
    }

    [Test]
    public void NegativeSoftcapFailsSessionCreation()
    {
        var c = CaseFactory.Make(12, [1, 1, 4, 16], [1, 1, 4, 16], [1, 1, 4, 16], softcap: -1f);
        var error = Assert.Throws<OnnxRuntimeException>(() => OpRunner.RunFused(c));
        Assert.That(error!.Message, Does.Contain("attribute softcap must be a finite value >= 0"));
    }

    [Test]
    public void MissingRequiredInputIsRejected()
    {
        var c = CaseFactory.Make(13, [1, 1, 4, 16], [1, 1, 4, 16], [1, 1, 4, 16]);
        var error = Assert.Throws<OnnxRuntimeException>(() => OpRunner.RunFused(c, ["Q", "", "V"]));
        Assert.That(error!.Message, Does.Contain("K").IgnoreCase);
    }

    [Test]
    public void MixedElementTypesAreRejectedAtLoad()
    {
        var c = CaseFactory.Make(14, [1, 1, 4, 16], [1, 1, 4, 16], [1, 1, 4, 16], ElementType.Float16);
        var model = Google.Protobuf.MessageExtensions.ToByteArray(MixedTypeModel(c));
        using var options = OpRunner.CreateOptions();
        var error = Assert.Throws<OnnxRuntimeException>(() => new InferenceSession(model, options).Dispose());
        Assert.That(error!.Message, Does.Contain("FlashAttention").Or.Contain("type").IgnoreCase);
    }

    private static GraphRewriter.Onnx.ModelProto MixedTypeModel(AttentionCase c)
    {
        var model = GraphRewriter.Onnx.ModelProto.Parser.ParseFrom(OpModels.FusedModel(c));
        model.Graph.Input[1].Type.TensorType.ElemType = (int)GraphRewriter.Onnx.TensorProto.Types.DataType.Float;
        return model;
    }

    private static string ShapeText(long[] shape) => "(" + string.Join(", ", shape) + ")";
}
