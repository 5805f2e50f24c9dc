using OrtFlash.Verification;

namespace OrtFlash.Tests.Managed.Verification;

[TestFixture]
public sealed class ModelSourceTests
{
    private string folder = "";

    [SetUp]
    public void CreateFolder() => folder = System.IO.Directory.CreateTempSubdirectory("ortflash-source-").FullName;

    [TearDown]
    public void DeleteFolder() => System.IO.Directory.Delete(folder, recursive: true);

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(folder, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Test]
    public void AnExportedModelIsReadWithItsPath()
    {
        var source = ModelSource.FromFile(TestModels.PathOf("vit-opset17.onnx"));
        Assert.Multiple(() =>
        {
            Assert.That(source.FilePath, Is.EqualTo(Path.GetFullPath(TestModels.PathOf("vit-opset17.onnx"))));
            Assert.That(source.Model.Graph.Input.Select(i => i.Name), Does.Contain("pixel_values"));
        });
    }

    [Test]
    public void AMissingFileIsRefused() =>
        Assert.That(() => ModelSource.FromFile(Path.Combine(folder, "absent.onnx")),
            Throws.TypeOf<InvalidModelException>().With.Message.Contains("does not exist"));

    [Test]
    public void AnEmptyFileIsRefused() =>
        Assert.That(() => ModelSource.FromFile(Write("empty.onnx", [])), Throws.TypeOf<InvalidModelException>().With.Message.Contains("empty"));

    [Test]
    public void ATextFileIsRefused() =>
        Assert.That(() => ModelSource.FromFile(Write("notes.onnx", "just some text, not a model\n"u8.ToArray())),
            Throws.TypeOf<InvalidModelException>().With.Message.Contains("not an ONNX model"));

    [Test]
    public void ATruncatedModelIsRefused()
    {
        var bytes = File.ReadAllBytes(TestModels.PathOf("bert-opset14.onnx"));
        Assert.That(() => ModelSource.FromFile(Write("truncated.onnx", bytes[..(bytes.Length / 2)])),
            Throws.TypeOf<InvalidModelException>().With.Message.Contains("truncated.onnx"));
    }

    [Test]
    public void ADirectoryIsRefused() =>
        Assert.That(() => ModelSource.FromFile(folder), Throws.TypeOf<InvalidModelException>().With.Message.Contains("directory"));
}
