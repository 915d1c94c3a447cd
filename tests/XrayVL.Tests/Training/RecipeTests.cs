using XrayVL.Tests.Support;
using XrayVL.Data;
using XrayVL.Modeling;
using XrayVL.Tests.Text;
using XrayVL.Training;

namespace XrayVL.Tests.Training;

public class RecipeTests
{
    private const string Model = """
        "model": { "config": { "vision_config": { "image_size": 32, "patch_size": 8, "hidden_size": 32, "num_attention_heads": 2 },
                               "text_config": { "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2 } } }
        """;

    private static string Recipe(string stages, string extra = "", string model = Model) => $$"""
        {
          "seed": 3, {{extra}}
          {{model}},
          "data": { "sources": { "iu": { "source": "xrayglm", "input": "${shared}/iu-xray" } } },
          "stages": {{stages}}
        }
        """;

    private static XrayVLException Invalid(string json)
    {
        string path = Path.Combine(TempDir.Create("xrayvl-recipe"), "bad.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<XrayVLException>(() => TrainRecipe.Load(path));
        Assert.StartsWith(path, e.Message);          // every error names the file
        return e;
    }

    [Fact]
    public void DefaultsFillInAndEveryStageGetsItsKindsParts()
    {
        var recipe = TrainRecipe.Parse(Recipe("""
            [ { "name": "t", "kind": "text", "steps": 10 },
              { "name": "a", "kind": "align", "epochs": 2 },
              { "name": "i", "kind": "instruct", "steps": 5, "data": [ { "source": "iu", "tasks": ["vqa"], "repeat": 3 } ] } ]
            """));
        Assert.Equal("bf16", recipe.Dtype);
        Assert.Equal(TrainableParts.LanguageModel, recipe.Stages[0].Parts);
        Assert.Equal(TrainableParts.Projector, recipe.Stages[1].Parts);
        Assert.Equal(TrainableParts.Projector | TrainableParts.Lora, recipe.Stages[2].Parts);
        Assert.Equal(16, recipe.Stages[2].EffectiveLora!.R);
        Assert.Null(recipe.Stages[0].EffectiveLora);
        Assert.Equal("iu", Assert.Single(recipe.Stages[0].Data).Source);       // no data: every source
        Assert.Equal([Instructions.Report, Instructions.Findings], recipe.Stages[1].TasksFor(recipe.Stages[1].Data[0]));
        Assert.Equal(3e-5, recipe.Stages[0].EffectiveMinLr, 12);
        Assert.Equal(TrainableParts.Full, StageRecipe.ParseTrainable("full"));
        Assert.Equal(TrainableParts.Vision | TrainableParts.Projector | TrainableParts.Lora, StageRecipe.ParseTrainable("vision+projector+lora"));
    }

    [Fact]
    public void SharedPlaceholderAndRelativePathsResolve()
    {
        string dir = TempDir.Create("xrayvl-recipe");
        string path = Path.Combine(dir, "r.json");
        File.WriteAllText(path, Recipe("""[ { "name": "t", "kind": "text", "steps": 1 } ]"""));
        var recipe = TrainRecipe.Load(path);
        Assert.Equal(Path.Combine("/data/x", "iu-xray"), recipe.ResolvePath("${shared}/iu-xray", "/data/x"));
        Assert.Equal(Path.Combine(dir, "sub", "f.json"), recipe.ResolvePath("sub/f.json", null));
        var e = Assert.Throws<XrayVLException>(() => recipe.ResolvePath("${shared}/iu-xray", null));
        Assert.Contains("--shared", e.Message);
        Assert.Equal(Path.GetFullPath("/elsewhere"), recipe.SharedDirectory("/elsewhere"));
    }

    [Fact]
    public void FingerprintIgnoresLoggingButNotOptimisation()
    {
        string stages(string extra) => $$"""[ { "name": "t", "kind": "text", "steps": 10 {{extra}} } ]""";
        string a = TrainRecipe.Parse(Recipe(stages(""))).Fingerprint;
        Assert.Equal(a, TrainRecipe.Parse(Recipe(stages(", \"eval_every\": 3, \"save_every\": 7, \"keep_last\": 5"))).Fingerprint);
        Assert.NotEqual(a, TrainRecipe.Parse(Recipe(stages(", \"lr\": 1e-3"))).Fingerprint);
        Assert.NotEqual(a, TrainRecipe.Parse(Recipe(stages(""), "\"dtype\": \"fp32\",")).Fingerprint);
    }

    [Theory]
    [InlineData("""[ { "name": "t", "kind": "pretrain", "steps": 1 } ]""", "kind 'pretrain'")]
    [InlineData("""[ { "name": "t", "kind": "text" } ]""", "steps or epochs")]
    [InlineData("""[ { "name": "t", "kind": "text", "steps": 1, "epochs": 2 } ]""", "steps or epochs")]
    [InlineData("""[ { "name": "t", "kind": "text", "steps": 1, "trainable": "projector" } ]""", "text stage has no images")]
    [InlineData("""[ { "name": "t", "kind": "align", "steps": 1, "trainable": "lm+lora" } ]""", "both lm and lora")]
    [InlineData("""[ { "name": "t", "kind": "align", "steps": 1, "trainable": "decoder" } ]""", "trainable part 'decoder'")]
    [InlineData("""[ { "name": "t", "kind": "align", "steps": 1, "lora": { "r": 4, "target_modules": ["q_proj"] } } ]""", "trainable has no lora")]
    [InlineData("""[ { "name": "t", "kind": "instruct", "steps": 1, "trainable": "lora", "lora": { "r": 0, "target_modules": ["q_proj"] } } ]""", "r must be positive")]
    [InlineData("""[ { "name": "t", "kind": "text", "steps": 1, "lr": -1 } ]""", "lr must be positive")]
    [InlineData("""[ { "name": "t", "kind": "text", "steps": 1, "batch_size": 0 } ]""", "batch_size")]
    [InlineData("""[ { "name": "t", "kind": "text", "steps": 1, "min_lr": 1 } ]""", "min_lr")]
    [InlineData("""[ { "name": "t", "kind": "align", "steps": 1, "data": [ { "source": "mimic" } ] } ]""", "source 'mimic'")]
    [InlineData("""[ { "name": "t", "kind": "instruct", "steps": 1, "data": [ { "source": "iu", "tasks": ["caption"] } ] } ]""", "task 'caption'")]
    [InlineData("""[ { "name": "t", "kind": "text", "steps": 1 }, { "name": "t", "kind": "text", "steps": 1 } ]""", "used twice")]
    [InlineData("""[ { "name": "t", "kind": "align", "steps": 1, "text_format": "plain" } ]""", "text stages only")]
    [InlineData("""[]""", "stages is empty")]
    [InlineData("""[ { "name": "t", "kind": "align", "steps": 1, "data": [ { "source": "iu", "labels": { "Pneumonitis": 1 } } ] } ]""", "label 'Pneumonitis'")]
    [InlineData("""[ { "name": "t", "kind": "align", "steps": 1, "data": [ { "source": "iu", "labels": { "No Finding": 2 } } ] } ]""", "must be 1, 0 or -1")]
    [InlineData("""[ { "name": "t", "kind": "align", "steps": 1, "data": [ { "source": "iu", "language": "fr" } ] } ]""", "language 'fr' is not en or zh")]
    public void InvalidStagesAreNamed(string stages, string expected)
    {
        var e = Invalid(Recipe(stages));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void ALabelFilterKeepsOnlyTheStudiesWithThoseLabelsInTraining()
    {
        var recipe = TrainRecipe.Parse(Recipe("""
            [ { "name": "t", "kind": "text", "steps": 1, "text_format": "plain",
                "data": [ { "source": "iu", "labels": { "no_finding": 1 }, "repeat": 2 }, { "source": "iu", "labels": { "Pneumonia": 1 } } ] } ]
            """));
        Study Make(int i, string label, string split) => new()
        {
            StudyId = $"s{i}", PatientId = $"p{i}", Split = split, Findings = $"report {i} {label}",
            Labels = new Dictionary<string, int?> { [label] = 1 },
        };
        var studies = new List<Study>
        {
            Make(0, "No Finding", "train"), Make(1, "Pneumonia", "train"), Make(2, "No Finding", "train"),
            Make(3, "Cardiomegaly", "train"), Make(4, "No Finding", "val"),
            new() { StudyId = "s5", PatientId = "p5", Split = "train", Findings = "report 5 unlabelled" },
        };
        var items = TrainingData.Items(recipe.Stages[0], recipe, new Dictionary<string, List<Study>> { ["iu"] = studies });
        Assert.Equal(["report 0 No Finding", "report 2 No Finding", "report 0 No Finding", "report 2 No Finding", "report 1 Pneumonia"],
            items.Train.Select(i => i.PlainText));
        Assert.Contains(items.Val, i => i.PlainText == "report 4 No Finding");   // validation is the source's val split, unfiltered
    }

    [Fact]
    public void ALanguageFilterKeepsOnlyThatLanguagesStudiesAndCombinesWithTheLabelFilter()
    {
        var recipe = TrainRecipe.Parse(Recipe("""
            [ { "name": "t", "kind": "text", "steps": 1, "text_format": "plain",
                "data": [ { "source": "iu", "language": "zh", "labels": { "No Finding": 1 } }, { "source": "iu", "language": "en" } ] } ]
            """));
        Study Make(int i, string language, string label) => new()
        {
            StudyId = $"s{i}-{language}", PatientId = $"p{i}", Split = "train", Language = language, Findings = $"{language} {i} {label}",
            Labels = new Dictionary<string, int?> { [label] = 1 },
        };
        var studies = new List<Study>
        {
            Make(0, "en", "No Finding"), Make(0, "zh", "No Finding"), Make(1, "en", "Pneumonia"), Make(1, "zh", "Pneumonia"),
            Make(2, "zh", "No Finding"),
        };
        var items = TrainingData.Items(recipe.Stages[0], recipe, new Dictionary<string, List<Study>> { ["iu"] = studies });
        Assert.Equal(["zh 0 No Finding", "zh 2 No Finding", "en 0 No Finding", "en 1 Pneumonia"], items.Train.Select(i => i.PlainText));
    }

    [Fact]
    public void ALanguageFilterKeepsTheOtherLanguagesQuestionsBuiltFromTheKeptStudiesUnlessCrossLanguageIsOff()
    {
        string RecipeJson(bool crossLanguage) => Recipe("""
            [ { "name": "t", "kind": "instruct", "trainable": "lora", "steps": 1,
                "data": [ { "source": "iu", "language": "en", "images": false, "tasks": ["report", "vqa"] } ] } ]
            """).Replace("\"data\": {", $"\"data\": {{ \"cross_language\": {(crossLanguage ? "true" : "false")},");
        Study Make(string language, string findings) => new()
        {
            StudyId = $"s0-{language}", PatientId = "p0", Split = "train", Language = language, Findings = findings,
            Labels = new Dictionary<string, int?> { ["Pneumonia"] = 1 },
        };
        var studies = new List<Study> { Make("en", "Right lower lobe pneumonia."), Make("zh", "右下肺炎。") };
        var sources = new Dictionary<string, List<Study>> { ["iu"] = studies };

        List<StageItem> Train(bool crossLanguage)
        {
            var recipe = TrainRecipe.Parse(RecipeJson(crossLanguage));
            return [.. TrainingData.Items(recipe.Stages[0], recipe, sources).Train];
        }

        var items = Train(crossLanguage: true);
        Assert.Equal(["en"], items.Where(i => i.Chat!.Task == "report").Select(i => i.Language));      // the zh study's report is left out
        Assert.Contains(items, i => i.Chat!.Task == "vqa" && i.Language == "zh");                     // questions from the en study's labels
        Assert.DoesNotContain(items, i => i.Texts.Any(t => t.Contains("右下肺炎")));

        Assert.All(Train(crossLanguage: false), i => Assert.Equal("en", i.Language));
    }

    [Fact]
    public void AVisionStageAppliesTheLabelFilterToo()
    {
        var recipe = TrainRecipe.Parse(Recipe("""
            [ { "name": "v", "kind": "vision", "trainable": "vision", "steps": 1, "data": [ { "source": "iu", "labels": { "Pneumonia": 1 } } ] } ]
            """));
        string dir = TempDir.Create("xrayvl-recipe");
        Study Make(int i, string label)
        {
            string image = Path.Combine(dir, $"{i}.png");
            File.WriteAllBytes(image, [0]);                                  // only its existence is checked here
            return new() { StudyId = $"s{i}", PatientId = $"p{i}", Split = "train", Images = [new StudyImage(image, Views.Frontal)],
                           Labels = new Dictionary<string, int?> { [label] = 1 } };
        }
        var studies = new List<Study> { Make(0, "No Finding"), Make(1, "Pneumonia"), Make(2, "No Finding"), Make(3, "Pneumonia") };
        var (train, _, _) = Trainer.VisionSamples(recipe.Stages[0], recipe.Seed, new Dictionary<string, List<Study>> { ["iu"] = studies });
        Assert.Equal([Path.Combine(dir, "1.png"), Path.Combine(dir, "3.png")], train.Select(t => t.Path));
    }

    [Fact]
    public void TheDefaultRecipeIsValidFindsTheSharedDataAndMakesAModelUnder50Megabytes()
    {
        string? path = null;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null && path is null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "configs", "default.json"))) path = Path.Combine(dir.FullName, "configs", "default.json");
        var recipe = TrainRecipe.Load(path ?? throw new FileNotFoundException("configs/default.json not found above the test binaries"));
        Assert.Equal(["vision", "text", "align", "instruct"], recipe.Stages.Select(s => s.Name));
        string? shared = recipe.SharedDirectory(null);
        Assert.True(File.Exists(Path.Combine(shared!, "PROVENANCE.md")), shared);
        Assert.True(Directory.Exists(recipe.ResolvePath(recipe.Data.Sources["covid"].Input, shared)));

        using var model = new VisionLanguageModel(recipe.Model.Config!.WithTokenizer(recipe.Tokenizer.VocabSize, recipe.Tokenizer.VocabSize - 1));
        long bytes = model.parameters().Sum(p => p.numel()) * 4;
        Assert.InRange(bytes, 10_000_000, 50_000_000);
        Assert.Equal(49, model.TokensPerImage);
    }

    [Fact]
    public void InvalidTopLevelFieldsAreNamed()
    {
        const string ok = """[ { "name": "t", "kind": "text", "steps": 1 } ]""";
        Assert.Contains("dtype 'fp16'", Invalid(Recipe(ok, "\"dtype\": \"fp16\",")).Message);
        Assert.Contains("$.stages[0].lrr", Invalid(Recipe("""[ { "name": "t", "kind": "text", "steps": 1, "lrr": 3 } ]""")).Message);
        Assert.Contains("exactly one of config", Invalid(Recipe(ok, model: "\"model\": {}")).Message);
        Assert.Contains("model.config", Invalid(Recipe(ok, model: """ "model": { "config": { "projector_type": "qformer" } } """)).Message);
        Assert.Contains("not a valid recipe", Invalid("{ \"seed\": ").Message);
        // Recipe paths and kinds of value, never .NET types or members.
        var wrongKind = Invalid(Recipe("""[ { "name": "t", "kind": "text", "steps": "ten" } ]""")).Message;
        Assert.Matches(@"not a valid recipe at \$\.stages\[0\]\.steps \(line \d+\): expected a whole number$", wrongKind);
        var unknown = Invalid(Recipe("""[ { "name": "t", "kind": "text", "steps": 1, "lrr": 3 } ]""")).Message;
        Assert.EndsWith("unknown field 'lrr'", unknown);
        Assert.DoesNotContain("System.", wrongKind + unknown);
        Assert.DoesNotContain("XrayVL.", wrongKind + unknown);
        Assert.Contains("recipe file not found", Assert.Throws<XrayVLException>(() => TrainRecipe.Load("/no/such/recipe.json")).Message);
    }
}
