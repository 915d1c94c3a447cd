using System.Text.Json;
using XrayVL.IO;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Seeds;

/// <summary>
/// The two seed fixtures (../shared/reference/seeds/{xraygpt, minigpt_med}) imported once, unchanged, through their own
/// yaml files into temporary XrayVL model folders that the tests then load as any model folder.
/// </summary>
public sealed class SeedFixture : IDisposable
{
    private readonly TempDir temp = new("xrayvl-seeds");

    public SeedFixture()
    {
        // The tiny fixtures' EVA and Q-Former are 64 wide with 4 heads (README): heads cannot be read from shapes.
        var paths = new SeedImport.SeedPaths(null, null, null, null, null, EvaHeads: 4, QFormerHeads: 4, DType: null);
        XrayGpt = SeedImport.Import(SeedImport.FromYaml(Seed("xraygpt", "xraygpt_tiny.yaml"), "xraygpt", paths), temp.File("xraygpt")).Directory;
        MiniGptMed = SeedImport.Import(SeedImport.FromYaml(Seed("minigpt_med", "minigptv2_tiny_eval.yaml"), "minigpt_med", paths), temp.File("minigpt_med")).Directory;
    }

    public static string Seed(string seed, params string[] parts) =>
        Path.Combine([ReferenceOutputs.Root, "seeds", seed, .. parts]);

    public static ReferenceOutputs Refs(string seed) => new(Seed(seed, "refs"));

    public static JsonElement Prompts(string seed) =>
        JsonDocument.Parse(File.ReadAllText(Seed(seed, "refs", "prompts.json"))).RootElement.Clone();

    /// <summary>The imported model folders.</summary>
    public string XrayGpt { get; }
    public string MiniGptMed { get; }

    public string Folder(string seed) => seed == "xraygpt" ? XrayGpt : MiniGptMed;

    public void Dispose() => temp.Dispose();
}
