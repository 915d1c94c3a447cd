using XrayVL.IO;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.IO;

public class AtomicFileTests
{
    [Fact]
    public void AFailedWriteLeavesTheOldFileAndNoTemporaryFile()
    {
        string dir = TempDir.Create("xrayvl-atomic");
        string path = Path.Combine(dir, "state.json");
        AtomicFile.WriteAllText(path, "old");
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, stream =>
        {
            stream.Write("half a fi"u8);
            throw new InvalidOperationException("disk full");
        }));
        Assert.Equal("old", File.ReadAllText(path));
        Assert.Equal(["state.json"], Directory.GetFiles(dir).Select(Path.GetFileName));
    }

    [Fact]
    public void LinesAreWrittenWithUnixLineEndsAndCounted()
    {
        string path = Path.Combine(TempDir.Create("xrayvl-atomic"), "sub", "lines.jsonl");
        Assert.Equal(2, AtomicFile.WriteLines(path, ["a", "b"]));
        Assert.Equal("a\nb\n", File.ReadAllText(path));
    }

    [Fact]
    public void ReplaceDirectorySwapsAWholeFolder()
    {
        string dir = TempDir.Create("xrayvl-atomic");
        string target = Path.Combine(dir, "model"), fresh = Path.Combine(dir, "model.new");
        Directory.CreateDirectory(target);
        File.WriteAllText(Path.Combine(target, "old.txt"), "1");
        Directory.CreateDirectory(fresh);
        File.WriteAllText(Path.Combine(fresh, "new.txt"), "2");
        AtomicFile.ReplaceDirectory(fresh, target);
        Assert.Equal(["new.txt"], Directory.GetFiles(target).Select(Path.GetFileName));
        Assert.Equal(["model"], Directory.GetDirectories(dir).Select(Path.GetFileName));
    }

    [Fact]
    public void JsonFilesAreReadOrRefusedInOneLineNamingTheFile()
    {
        string dir = TempDir.Create("xrayvl-json");
        string missing = Path.Combine(dir, "none.json");
        Assert.Equal($"{missing}: recipe file not found", Assert.Throws<XrayVLException>(() => Json.ReadObject(missing, "recipe")).Message);

        string bad = Path.Combine(dir, "bad.json");
        File.WriteAllText(bad, """{ "r": 4, "lora_alpha": "x" }""");
        var e = Assert.Throws<XrayVLException>(() => Json.Read<XrayVL.Modeling.LoraConfig>(bad, "adapter config"));
        Assert.StartsWith($"{bad}: not a valid adapter config at $.lora_alpha", e.Message);
        Assert.DoesNotContain('\n', e.Message);

        string commented = Path.Combine(dir, "ok.json");
        File.WriteAllText(commented, "// a hand-edited file\n{ \"a\": 1, }");
        Assert.Equal(1, (int)Json.ReadObject(commented, "config")["a"]!);
        Assert.Contains("not a JSON object", Assert.Throws<XrayVLException>(() =>
        {
            File.WriteAllText(commented, "[1, 2]");
            return Json.ReadObject(commented, "config");
        }).Message);
    }
}
