using XrayVL.Tests.Support;
using XrayVL.Data;
using XrayVL.Data.Labeler;
using XrayVL.Data.Sources;

namespace XrayVL.Tests.Data;

public class InstructionTests
{
    private static readonly Study English = new()
    {
        StudyId = "CXR7",
        PatientId = "CXR7",
        Images = [new StudyImage("/img/7-0.png", Views.Frontal), new StudyImage("/img/7-1.png", Views.Lateral)],
        Findings = "The heart is mildly enlarged. Small left pleural effusion. No pneumothorax.",
        Impression = "Cardiomegaly with small left effusion.",
        Language = "en",
        Split = "train",
        Source = "test",
    };

    private static readonly Study Chinese = new()
    {
        StudyId = "12_1",
        PatientId = "CXR12",
        Images = [new StudyImage("/img/12_1.png")],
        Findings = "心脏大小正常，肺部清晰，没有气胸或胸腔积液。",
        Language = "zh",
        Split = "val",
        Source = "test",
    };

    private static readonly Study Boxed = new()
    {
        StudyId = "covid-1-a",
        PatientId = "covid-1",
        Images = [new StudyImage("/img/a.jpg", Views.PA)],
        Labels = new Dictionary<string, int?> { ["Pneumonia"] = 1 },
        Boxes = [new StudyBox(0, "Right Lung", 4.8, 8.1, 32.5, 64.9), new StudyBox(0, "Left Lung", 43.1, 1.4, 96.1, 54.6)],
        Language = "en",
        Source = "covid",
    };

    [Fact]
    public void DeterministicForASeed()
    {
        var studies = new[] { English, Chinese, Boxed };
        var a = Instructions.Build(studies, new InstructionOptions { Seed = 1 }).Select(ConversationJsonl.ToLine).ToList();
        var b = Instructions.Build(studies, new InstructionOptions { Seed = 1 }).Select(ConversationJsonl.ToLine).ToList();
        var reversed = Instructions.Build(studies.Reverse(), new InstructionOptions { Seed = 1 }).Select(ConversationJsonl.ToLine).Order().ToList();
        Assert.Equal(a, b);
        Assert.Equal(a.Order().ToList(), reversed);  // each study draws from its own seeded generator
        var seeds = Enumerable.Range(2, 6).Select(s => string.Join("\n", Instructions.Build(studies, new InstructionOptions { Seed = s }).Select(ConversationJsonl.ToLine)));
        Assert.Contains(seeds, s => s != string.Join("\n", a));  // other seeds pick other phrasings
    }

    [Fact]
    public void ReportTaskInTheReportsOwnLanguageWithImagesOnTheFirstTurn()
    {
        var all = Instructions.Build([English, Chinese], new InstructionOptions { Seed = 3 });
        var reports = all.Where(c => c.Task == Instructions.Report).ToList();
        Assert.Equal(["en", "zh"], reports.Select(c => c.Language));
        var en = reports[0];
        Assert.Equal(["/img/7-0.png", "/img/7-1.png"], en.Images);
        Assert.Equal(2, en.Turns[0].Images);
        Assert.Equal("user", en.Turns[0].Role);
        Assert.Equal($"Findings: {English.Findings}\nImpression: {English.Impression}", en.Turns[1].Text);
        Assert.Equal(Chinese.Findings, reports[1].Turns[1].Text);
        Assert.All(all, c => Assert.Equal(c.Images.Count, c.Turns.Sum(t => t.Images)));
        Assert.All(all, c => Assert.Equal(c.Images.Count, c.Turns[0].Images));
    }

    [Fact]
    public void ClosedQuestionsAnswerFromTheLabelsWithTheReportSentence()
    {
        var vqa = Instructions.Build([English], new InstructionOptions { Seed = 5, Languages = ["en"], QuestionsPerStudy = 6, Tasks = [Instructions.Vqa] });
        Assert.Equal(4, vqa.Count);  // cardiomegaly, effusion, pneumothorax, and the normal question (fills the rest)
        string Answer(string contains) => vqa.Single(c => c.Turns[0].Text.Contains(contains)).Turns[1].Text;
        Assert.Equal("Yes. Small left pleural effusion.", Answer("pleural effusion"));
        Assert.Equal("No. No pneumothorax.", Answer("pneumothorax"));
        Assert.Equal("Yes. The heart is mildly enlarged.", Answer("cardiomegaly"));
        Assert.Equal("No. Findings: cardiomegaly, pleural effusion.", Answer("normal"));

        var zh = Instructions.Build([English], new InstructionOptions { Seed = 5, Languages = ["zh"], QuestionsPerStudy = 6, Tasks = [Instructions.Vqa] });
        Assert.Contains(zh, c => c.Turns[0].Text.Contains("胸腔积液") && c.Turns[1].Text == "是。存在胸腔积液。");
        Assert.Contains(zh, c => c.Turns[0].Text.Contains("气胸") && c.Turns[1].Text == "否。未见气胸。");

        var chinese = Instructions.Build([Chinese], new InstructionOptions { Seed = 5, Languages = ["zh"], QuestionsPerStudy = 6, Tasks = [Instructions.Vqa] });
        Assert.Contains(chinese, c => c.Turns[0].Text.Contains("气胸") && c.Turns[1].Text == "否。心脏大小正常，肺部清晰，没有气胸或胸腔积液");
        Assert.Contains(chinese, c => c.Turns[0].Text.Contains("正常") && c.Turns[1].Text.StartsWith("是。"));
    }

    [Fact]
    public void FindingListsAndGroundingBoxes()
    {
        var list = Instructions.Build([English, Chinese], new InstructionOptions { Seed = 2, Tasks = [Instructions.Findings] });
        Assert.Contains(list, c => c.Language == "en" && c.StudyId == "CXR7" && c.Turns[1].Text == "Findings: cardiomegaly, pleural effusion.");
        Assert.Contains(list, c => c.Language == "zh" && c.StudyId == "CXR7" && c.Turns[1].Text == "发现：心脏增大、胸腔积液。");
        Assert.Contains(list, c => c.Language == "en" && c.StudyId == "12_1" && c.Turns[1].Text == "No abnormal findings.");

        var boxes = Instructions.Build([Boxed], new InstructionOptions { Seed = 2, Tasks = [Instructions.Grounding] });
        Assert.Equal(4, boxes.Count);  // two lungs × two languages
        Assert.Contains(boxes, c => c.Language == "en" && c.Turns[0].Text.Contains("right lung") && c.Turns[1].Text == "{<5><8><33><65>}");
        Assert.Contains(boxes, c => c.Language == "zh" && c.Turns[0].Text.Contains("左肺") && c.Turns[1].Text == "{<43><1><96><55>}");
        Assert.Equal("{<0><100><50><50>}", AnswerFormats.Box(new StudyBox(0, "x", -3, 140, 49.5, 50.4)));

        // A box thinner than a grid unit would be written without area ("{<10><20><10><40>}"), which is no box: not asked.
        var thin = Boxed with { Boxes = [new StudyBox(0, "Right Lung", 10.2, 20, 10.4, 40), Boxed.Boxes![1]] };
        var asked = Instructions.Build([thin], new InstructionOptions { Seed = 2, Tasks = [Instructions.Grounding] });
        Assert.Equal(2, asked.Count);
        Assert.All(asked, c => Assert.Single(GridBoxes.Parse(c.Turns[1].Text)));
    }

    [Fact]
    public void MultiTurnMixesTasks()
    {
        var multi = Instructions.Build([English, Boxed], new InstructionOptions { Seed = 9, Languages = ["en"], Tasks = [Instructions.MultiTurn] });
        Assert.Equal(2, multi.Count);
        var report = multi.Single(c => c.StudyId == "CXR7");
        Assert.True(report.Turns.Count >= 4);
        Assert.StartsWith("Findings:", report.Turns[1].Text);
        Assert.Equal(["user", "assistant"], report.Turns.Select(t => t.Role).Take(2));
        Assert.All(report.Turns.Where((t, i) => i % 2 == 1), t => Assert.Equal("assistant", t.Role));
        var covid = multi.Single(c => c.StudyId == "covid-1-a");
        Assert.StartsWith("Findings: pneumonia.", covid.Turns[1].Text);  // no report: the finding list opens
    }

    [Fact]
    public void SummaryCountsEachTaskAndLanguage()
    {
        var all = Instructions.Build([English, Chinese, Boxed], new InstructionOptions { Seed = 4 });
        var summary = Instructions.Summarize(all);
        Assert.Equal(all.Count, summary.Conversations);
        Assert.Equal(all.Sum(c => c.Turns.Count), summary.Turns);
        Assert.Equal(3, summary.Studies);
        Assert.Equal(2, summary.ByTask[Instructions.Report]);
        Assert.Equal(4, summary.ByTask[Instructions.Grounding]);
        Assert.Equal(summary.Conversations, summary.ByLanguage.Values.Sum());
        Assert.Equal(all.Count(c => c.Task == Instructions.Vqa && c.Language == "zh"), summary.ByTaskAndLanguage["vqa/zh"]);
        Assert.Contains("grounding", summary.ToTable());
        Assert.Throws<XrayVLException>(() => Instructions.Build([English], new InstructionOptions { Tasks = ["caption"] }));
    }

    [Fact]
    public void ConversationsRoundTripThroughTheGenericJsonl()
    {
        using var t = new TempDir();
        t.Write("img/7-0.png", "png");
        t.Write("img/7-1.png", "png");
        var study = English with { Images = [new StudyImage(t.File("img/7-0.png")), new StudyImage(t.File("img/7-1.png"))] };
        var built = Instructions.Build([study, Chinese with { Images = [new StudyImage(t.File("img/7-0.png"))] }], new InstructionOptions { Seed = 11 });
        string path = t.File("instructions.jsonl");
        Assert.Equal(built.Count, ConversationJsonl.Write(path, built));

        Assert.Equal(built.Select(ConversationJsonl.ToLine), ConversationJsonl.Read(path).Select(ConversationJsonl.ToLine));

        // Read back as a source, the conversations pass through instruction building unchanged.
        var source = new JsonlSource().Read(new SourceOptions { Input = path });
        Assert.Equal(built.Count, source.Studies.Count);
        Assert.Equal(0, source.MissingImages);
        var again = Instructions.Build(source.Studies, new InstructionOptions { Seed = 99 });
        Assert.Equal(built.Count, again.Count);
        for (int i = 0; i < built.Count; i++)
        {
            Assert.Equal(built[i].Id, again[i].Id);
            Assert.Equal(built[i].Task, again[i].Task);
            Assert.Equal(built[i].Language, again[i].Language);
            Assert.Equal(built[i].Images, again[i].Images);
            Assert.Equal(built[i].Turns, again[i].Turns);
            Assert.Equal(built[i].Split, again[i].Split);
        }
    }
}

public class InstructionFileTests
{
    [Fact]
    public void BuildFileReadsAManifestAndWritesJsonl()
    {
        using var t = new TempDir();
        string manifest = t.File("manifest.jsonl");
        Manifest.Write(manifest, [new Study
        {
            StudyId = "CXR1", PatientId = "CXR1", Findings = "No pneumothorax. Small right pleural effusion.", Language = "en", Split = "test",
            Images = [new StudyImage("/img/1.png")],
        }]);
        var summary = Instructions.BuildFile(manifest, t.File("out/instructions.jsonl"), new InstructionOptions { Seed = 0, Languages = ["en"] });
        var lines = ConversationJsonl.Read(t.File("out/instructions.jsonl"));
        Assert.Equal(summary.Conversations, lines.Count);
        Assert.Equal(1, summary.ByTask[Instructions.Report]);
        Assert.All(lines, c => Assert.Equal("test", c.Split));
        Assert.Contains("\"from\":\"human\",\"value\":\"<image>\\n", File.ReadAllText(t.File("out/instructions.jsonl")));
    }
}
