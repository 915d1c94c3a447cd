using System.Globalization;
using System.Text;
using XrayVL.Data.Labeler;

namespace XrayVL.Data;

/// <summary>Which conversations to build.</summary>
public sealed record InstructionOptions
{
    /// <summary>Same seed, same studies → the same conversations (each study draws from its own seeded generator).</summary>
    public int Seed { get; init; }
    /// <summary>TrainingConversation languages. Report generation is built only in the report's own language.</summary>
    public IReadOnlyList<string> Languages { get; init; } = ["en", "zh"];
    /// <summary>Tasks to build, from <see cref="Instructions.Tasks"/>.</summary>
    public IReadOnlyList<string> Tasks { get; init; } = Instructions.Tasks;
    /// <summary>Closed questions per study and language (mixing present/uncertain and absent findings when the labels allow).</summary>
    public int QuestionsPerStudy { get; init; } = 2;
    /// <summary>Build label-based tasks (VQA, finding lists, grounding) in languages other than the report's too.</summary>
    public bool CrossLanguage { get; init; } = true;
}

/// <summary>How many conversations each task and language got.</summary>
public sealed record InstructionSummary(
    int Conversations, int Turns, int Studies,
    IReadOnlyDictionary<string, int> ByTask, IReadOnlyDictionary<string, int> ByLanguage,
    IReadOnlyDictionary<string, int> ByTaskAndLanguage)
{
    public string ToTable()
    {
        var sb = new StringBuilder();
        var languages = ByLanguage.Keys.Order(StringComparer.Ordinal).ToList();
        sb.Append($"{"task",-12}").AppendJoin("", languages.Select(l => $"{l,8}")).AppendLine($"{"total",8}");
        foreach (var task in ByTask.Keys.Order(StringComparer.Ordinal))
        {
            sb.Append($"{task,-12}");
            foreach (var l in languages) sb.Append($"{ByTaskAndLanguage.GetValueOrDefault(task + "/" + l),8}");
            sb.AppendLine($"{ByTask[task],8}");
        }
        sb.Append($"{"total",-12}").AppendJoin("", languages.Select(l => $"{ByLanguage[l],8}")).AppendLine($"{Conversations,8}");
        sb.AppendLine($"{Studies} studies, {Turns} turns");
        return sb.ToString();
    }
}

/// <summary>
/// Builds training conversations from manifest studies, in Chinese and English, from pools of phrasings:
/// report generation (findings + impression), closed VQA from the labels ("Is there a pleural effusion?" →
/// "Yes. {the report sentence}"), finding listing, grounding where boxes exist, and multi-turn chats that mix them.
/// Boxes are written MiniGPT-Med style as <c>{&lt;x1&gt;&lt;y1&gt;&lt;x2&gt;&lt;y2&gt;}</c>, integers on a 0–100 grid
/// (x to the right, y down, from the image's top-left corner). Studies that carry their own conversations (the jsonl
/// source) are passed through unchanged.
/// </summary>
public static class Instructions
{
    public const string Report = "report";
    public const string Vqa = "vqa";
    public const string Findings = "findings";
    public const string Grounding = "grounding";
    public const string MultiTurn = "multi_turn";

    public static readonly IReadOnlyList<string> Tasks = [Report, Vqa, Findings, Grounding, MultiTurn];

    public static List<TrainingConversation> Build(IEnumerable<Study> studies, InstructionOptions options, ILabeler? labeler = null)
    {
        labeler ??= Labeler.Labeler.Default;
        foreach (string t in options.Tasks)
        {
            if (!Tasks.Contains(t)) throw new XrayVLException($"unknown instruction task '{t}'; expected one of: {string.Join(", ", Tasks)}");
        }
        foreach (string l in options.Languages)
        {
            if (l is not ("en" or "zh")) throw new XrayVLException($"unknown instruction language '{l}'; expected en or zh");
        }
        var list = new List<TrainingConversation>();
        foreach (var study in studies) list.AddRange(ForStudy(study, options, labeler));
        return list;
    }

    /// <summary>
    /// `xrayvl data instructions`: reads a manifest, builds the conversations, writes them as generic JSONL
    /// (<see cref="ConversationJsonl"/>, atomically) and returns the summary.
    /// </summary>
    public static InstructionSummary BuildFile(string manifestPath, string outputPath, InstructionOptions options, ILabeler? labeler = null)
    {
        var conversations = Build(Manifest.Read(manifestPath), options, labeler);
        ConversationJsonl.Write(outputPath, conversations);
        return Summarize(conversations);
    }

    public static InstructionSummary Summarize(IEnumerable<TrainingConversation> conversations)
    {
        var byTask = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var byLanguage = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var both = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var studies = new HashSet<string>();
        int count = 0, turns = 0;
        foreach (var c in conversations)
        {
            count++;
            turns += c.Turns.Count;
            byTask[c.Task] = byTask.GetValueOrDefault(c.Task) + 1;
            byLanguage[c.Language] = byLanguage.GetValueOrDefault(c.Language) + 1;
            both[c.Task + "/" + c.Language] = both.GetValueOrDefault(c.Task + "/" + c.Language) + 1;
            studies.Add(c.StudyId ?? c.Id);
        }
        return new InstructionSummary(count, turns, studies.Count, byTask, byLanguage, both);
    }

    private static IEnumerable<TrainingConversation> ForStudy(Study study, InstructionOptions options, ILabeler labeler)
    {
        var images = study.Images.Select(i => i.Path).ToList();
        if (study.Conversations is { Count: > 0 } own)
        {
            yield return new TrainingConversation
            {
                Id = study.StudyId,
                Task = study.Meta?.GetValueOrDefault("task") ?? "custom",
                Language = study.Language,
                Images = images,
                Turns = own,
                StudyId = study.StudyId,
                PatientId = study.PatientId,
                Split = study.Split,
            };
            yield break;
        }

        string reportText = study.ReportText;
        // Labels: the manifest's when present, else the labeler's; evidence sentences come from the labeler on the report.
        var fromReport = reportText.Length > 0 ? labeler.Label(reportText, study.Language) : null;
        var labels = study.Labels != null ? ChexpertLabels.FromDictionary(study.Labels) : fromReport;

        foreach (string lang in options.Languages)
        {
            bool ownLanguage = lang == study.Language;
            var rng = new Random(Seed(options.Seed, study.StudyId, lang));
            var context = new StudyContext(study, lang, images, labels, ownLanguage ? fromReport : null, rng);
            bool labelTasks = ownLanguage || options.CrossLanguage;
            var tasks = options.Tasks;

            // Each builder returns the turns of one exchange (user, assistant), or null when the study lacks what it needs.
            var reportTurns = tasks.Contains(Report) || tasks.Contains(MultiTurn) ? ReportExchange(context, reportText, ownLanguage) : null;
            var questionTurns = labelTasks ? QuestionExchanges(context, options.QuestionsPerStudy) : [];
            var listTurns = labelTasks ? FindingListExchange(context) : null;
            var groundTurns = labelTasks ? GroundingExchanges(context) : [];

            if (tasks.Contains(Report) && reportTurns != null) yield return context.Make(Report, 0, reportTurns);
            if (tasks.Contains(Vqa))
            {
                for (int i = 0; i < questionTurns.Count; i++) yield return context.Make(Vqa, i, questionTurns[i]);
            }
            if (tasks.Contains(Findings) && listTurns != null) yield return context.Make(Findings, 0, listTurns);
            if (tasks.Contains(Grounding))
            {
                for (int i = 0; i < groundTurns.Count; i++) yield return context.Make(Grounding, i, groundTurns[i]);
            }
            if (tasks.Contains(MultiTurn))
            {
                // Opening: the report when there is one in this language, else the finding list; then questions and a box.
                var parts = new List<ConversationTurn[]>();
                var opening = reportTurns ?? listTurns;
                if (opening != null) parts.Add(opening);
                var followUps = questionTurns.Concat(groundTurns.Take(1)).OrderBy(_ => rng.Next()).ToList();
                parts.AddRange(followUps.Take(rng.Next(1, 4)));
                if (parts.Count >= 2) yield return context.Make(MultiTurn, 0, parts.SelectMany(p => p).ToArray());
            }
        }
    }

    private sealed record StudyContext(Study Study, string Lang, List<string> Images, ChexpertLabels? Labels, ChexpertLabels? Evidence, Random Rng)
    {
        public string Pick(IReadOnlyList<string> pool) => pool[Rng.Next(pool.Count)];

        /// <summary>A conversation whose first user turn carries the study's images.</summary>
        public TrainingConversation Make(string task, int index, ConversationTurn[] turns)
        {
            var withImages = turns.ToArray();
            withImages[0] = withImages[0] with { Images = Images.Count };
            for (int i = 1; i < withImages.Length; i++) withImages[i] = withImages[i] with { Images = 0 };
            return new TrainingConversation
            {
                Id = $"{Study.StudyId}-{task}-{Lang}-{index}",
                Task = task,
                Language = Lang,
                Images = Images,
                Turns = withImages,
                StudyId = Study.StudyId,
                PatientId = Study.PatientId,
                Split = Study.Split,
            };
        }
    }

    private static ConversationTurn[] Exchange(string question, string answer) =>
        [new ConversationTurn("user", question), new ConversationTurn("assistant", answer)];

    private static ConversationTurn[]? ReportExchange(StudyContext c, string reportText, bool ownLanguage)
    {
        if (!ownLanguage || reportText.Length == 0) return null;
        var s = c.Study;
        string answer = s.Findings.Length > 0 && s.Impression.Length > 0
            ? c.Lang == "zh" ? $"所见：{s.Findings}\n印象：{s.Impression}" : $"Findings: {s.Findings}\nImpression: {s.Impression}"
            : reportText;
        return Exchange(c.Pick(InstructionPhrases.Report[c.Lang]), answer);
    }

    private static List<ConversationTurn[]> QuestionExchanges(StudyContext c, int count)
    {
        var result = new List<ConversationTurn[]>();
        if (c.Labels == null || count <= 0) return result;
        var labels = c.Labels;
        var present = Observations.All.Where(o => o != Observation.NoFinding && labels[o] is LabelValue.Positive or LabelValue.Uncertain).ToList();
        var absent = Observations.All.Where(o => o != Observation.NoFinding && labels[o] == LabelValue.Negative).ToList();
        var chosen = new List<Observation>();
        // Alternate present and absent findings so answers are not all "no"; the normal question fills in.
        var pools = new[] { Shuffle(present, c.Rng), Shuffle(absent, c.Rng) };
        int which = c.Rng.Next(2);
        while (chosen.Count < count && (pools[0].Count > 0 || pools[1].Count > 0))
        {
            var pool = pools[which].Count > 0 ? pools[which] : pools[1 - which];
            chosen.Add(pool[0]);
            pool.RemoveAt(0);
            which = 1 - which;
        }
        if (chosen.Count < count && (labels[Observation.NoFinding] == LabelValue.Positive || present.Count > 0))
            chosen.Add(Observation.NoFinding);
        foreach (var o in chosen) result.Add(QuestionFor(c, o));
        return result;
    }

    private static List<Observation> Shuffle(List<Observation> list, Random rng) => list.OrderBy(_ => rng.Next()).ToList();

    private static ConversationTurn[] QuestionFor(StudyContext c, Observation o)
    {
        bool zh = c.Lang == "zh";
        var labels = c.Labels!;
        if (o == Observation.NoFinding)
        {
            bool normal = labels[o] == LabelValue.Positive;
            string? evidence = normal ? c.Evidence?.Evidence(o) : null;
            string answer = zh
                ? (normal ? "是。" + (evidence ?? "未见明显异常。") : "否。" + AnswerFormats.FindingList(labels, c.Lang))
                : (normal ? "Yes. " + (evidence ?? "No abnormality is seen.") : "No. " + AnswerFormats.FindingList(labels, c.Lang));
            return Exchange(c.Pick(InstructionPhrases.Normal[c.Lang]), answer);
        }
        var value = labels[o];
        string question = string.Format(CultureInfo.InvariantCulture, c.Pick(InstructionPhrases.Question[c.Lang]), InstructionPhrases.Noun(o, c.Lang));
        // The report's own sentence when the labeler found the same value in it, else a plain sentence.
        string? sentence = c.Evidence != null && c.Evidence[o] == value ? c.Evidence.Evidence(o) : null;
        string name = InstructionPhrases.Noun(o, c.Lang);
        string reply = (value, zh) switch
        {
            (LabelValue.Positive, false) => "Yes. " + (sentence ?? $"There is {name}."),
            (LabelValue.Negative, false) => "No. " + (sentence ?? $"There is no sign of {name}."),
            (LabelValue.Uncertain, false) => "Uncertain. " + (sentence ?? $"There may be {name}."),
            (LabelValue.Positive, true) => "是。" + (sentence ?? $"存在{name}。"),
            (LabelValue.Negative, true) => "否。" + (sentence ?? $"未见{name}。"),
            (LabelValue.Uncertain, true) => "不确定。" + (sentence ?? $"可能存在{name}。"),
            _ => throw new InvalidOperationException("questions are only asked about mentioned observations"),
        };
        return Exchange(question, reply);
    }

    private static ConversationTurn[]? FindingListExchange(StudyContext c)
    {
        if (c.Labels == null) return null;
        bool anyPresent = Observations.All.Any(o => o != Observation.NoFinding && c.Labels[o] is LabelValue.Positive or LabelValue.Uncertain);
        if (!anyPresent && c.Labels[Observation.NoFinding] != LabelValue.Positive) return null;
        return Exchange(c.Pick(InstructionPhrases.FindingList[c.Lang]), AnswerFormats.FindingList(c.Labels, c.Lang));
    }

    private static List<ConversationTurn[]> GroundingExchanges(StudyContext c)
    {
        var result = new List<ConversationTurn[]>();
        foreach (var box in c.Study.Boxes ?? [])
        {
            if (box.Image != 0 && c.Images.Count > 1) continue;  // questions carry all images; boxes on the first are unambiguous
            if (GridBoxes.Parse(AnswerFormats.Box(box)).Count == 0) continue;  // thinner than a grid unit: written without area, no box to ask for
            string target = InstructionPhrases.BoxLabel(box.Label, c.Lang);
            string question = string.Format(CultureInfo.InvariantCulture, c.Pick(InstructionPhrases.Grounding[c.Lang]), target);
            result.Add(Exchange(question, AnswerFormats.Box(box)));
        }
        return result;
    }

    private static int Seed(int seed, string studyId, string lang)
    {
        // FNV-1a: stable across runs (string.GetHashCode is randomized per process).
        uint h = 2166136261;
        foreach (char ch in $"{seed}\u0001{studyId}\u0001{lang}") h = (h ^ ch) * 16777619;
        return (int)(h & 0x7fffffff);
    }
}
