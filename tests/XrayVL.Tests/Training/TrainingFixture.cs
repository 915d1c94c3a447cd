using System.Text.Json;
using XrayVL.Imaging;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;
using XrayVL.Training;

namespace XrayVL.Tests.Training;

/// <summary>
/// A tiny training world: 12 studies as manifest lines (the jsonl source), each with its own 32×32 PNG and a short
/// English report (10 train, 2 val), the IU-trained tokenizer, and a recipe with a 2-layer model, built in a fresh folder.
/// </summary>
internal sealed class TrainingFixture
{
    public static readonly string[] Reports =
    [
        "The heart is normal in size. The lungs are clear.",
        "There is a small left pleural effusion.",
        "Cardiomegaly is present. No pneumothorax.",
        "Right lower lobe consolidation is seen.",
        "The lungs are hyperinflated. No focal opacity.",
        "A right-sided pneumothorax is present.",
        "Mild pulmonary edema. The heart is enlarged.",
        "No acute cardiopulmonary abnormality.",
        "There is a calcified granuloma in the left upper lobe.",
        "Degenerative changes of the spine. The lungs are clear.",
        "Low lung volumes with bibasilar atelectasis.",
        "A nodule is seen in the right upper lobe.",
    ];

    public string Root { get; }
    public string DataFile { get; }
    public IReadOnlyList<string> Images { get; }

    public TrainingFixture()
    {
        Root = TempDir.Create("xrayvl-train");
        var lines = new List<string>();
        var images = new List<string>();
        for (int i = 0; i < Reports.Length; i++)
        {
            string image = Path.Combine(Root, "images", $"img{i}.png");
            PngWriter.Save(Pattern(i), image);
            images.Add(image);
            lines.Add(JsonSerializer.Serialize(new
            {
                study_id = $"s{i}", patient_id = $"p{i}", images = new[] { new { path = $"images/img{i}.png" } },
                findings = Reports[i], language = "en", split = i < 10 ? "train" : "val",
            }, Json.Line));
        }
        DataFile = Path.Combine(Root, "studies.jsonl");
        File.WriteAllLines(DataFile, lines);
        Images = images;
    }

    /// <summary>A 32×32 image that differs per index: a diagonal gradient with a bright square at an index-dependent place.</summary>
    public static GrayImage Pattern(int index, int size = 32)
    {
        var pixels = new float[size * size];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
            {
                bool square = Math.Abs(x - (index * 7) % size) < 5 && Math.Abs(y - (index * 11) % size) < 5;
                pixels[y * size + x] = square ? 1f : (x + y + index * 3) % size / (float)size * 0.6f;
            }
        return new GrayImage(size, size, pixels);
    }

    /// <summary>A fresh output folder under the fixture.</summary>
    public string NewOut(string name = "out") => Path.Combine(Root, name + "-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>The model part of a recipe: a 32-px ViT with 16 patches and a 2-layer decoder.</summary>
    public const string ModelJson = """
        "model": { "config": {
          "vision_config": { "image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2 },
          "text_config": { "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256 },
          "projector_type": "mlp2x_gelu" } }
        """;

    /// <summary>A recipe over this fixture's data with the given stages (a JSON array), tokenizer from the IU-trained one.</summary>
    public TrainRecipe Recipe(string stagesJson, string dtype = "fp32", string? model = null, string? tokenizer = null, int seed = 7)
    {
        tokenizer ??= $$"""{ "from": {{JsonSerializer.Serialize(TrainedTokenizer.Instance.Directory)}} }""";
        string json = $$"""
            {
              "seed": {{seed}}, "dtype": "{{dtype}}",
              {{model ?? ModelJson}},
              "tokenizer": {{tokenizer}},
              "data": { "languages": ["en"], "sources": { "toy": { "source": "jsonl", "input": "studies.jsonl" } } },
              "stages": {{stagesJson}}
            }
            """;
        string path = Path.Combine(Root, $"recipe-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json);
        return TrainRecipe.Load(path);
    }

    /// <summary>Collects every event a run reports; optionally cancels when a global step is reached.</summary>
    public sealed class Events(CancellationTokenSource? cancel = null, long cancelAtStep = -1) : IProgress<TrainEvent>
    {
        public List<TrainEvent> All { get; } = [];

        public void Report(TrainEvent value)
        {
            All.Add(value);
            if (value is StepCompleted s && s.Progress.GlobalStep == cancelAtStep) cancel?.Cancel();
        }

        public List<TrainProgress> Steps => All.OfType<StepCompleted>().Select(s => s.Progress).ToList();
    }
}
