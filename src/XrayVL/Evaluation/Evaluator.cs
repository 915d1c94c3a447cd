using TorchSharp;
using XrayVL.Data;
using XrayVL.Data.Labeler;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.Evaluation;

/// <summary>What `xrayvl eval` evaluates and how.</summary>
public sealed record EvalOptions
{
    /// <summary>The manifest split whose studies are evaluated; training-split studies feed the baselines.</summary>
    public string Split { get; init; } = Splits.Test;
    public IReadOnlyList<string> Tasks { get; init; } = EvalTasks.All;
    /// <summary>Prompts generated together (left-padded, one batch per task).</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Prompt language; null: each study's own. Reports are only asked of studies in that language.</summary>
    public string? Language { get; init; }
    /// <summary>Evaluate at most this many studies of the split (in manifest order); null: all.</summary>
    public int? MaxStudies { get; init; }
    /// <summary>Closed questions per study (built from the labels as the training instructions are).</summary>
    public int QuestionsPerStudy { get; init; } = 2;
    /// <summary>Seeds the phrasing of questions and the random-report baseline.</summary>
    public int Seed { get; init; }
    /// <summary>Decoding of reports; null: greedy with the chat defaults (repetition penalty 1.1, no repeated 4-grams), 256 new tokens.</summary>
    public GenerationOptions? Generation { get; init; }
    /// <summary>New-token limit for the short answers (vqa, classify, ground).</summary>
    public int ShortAnswerTokens { get; init; } = 64;
    /// <summary>Use at most this many training studies for nearest-neighbour retrieval (features cost one vision pass each); null: all.</summary>
    public int? NeighbourPool { get; init; }
    /// <summary>Build the report baselines (most common, consensus, random, nearest neighbour) from the training split.</summary>
    public bool Baselines { get; init; } = true;
    /// <summary>
    /// Ask for reports with no image attached, on the studies of the split that have a report but none of whose image
    /// files is at hand (the report task only; studies with images are left out: evaluate those with their images).
    /// For report collections whose images are missing: it measures the model's report writing alone, beside the
    /// most common, consensus and random training reports (nearest-neighbour retrieval needs images and is left out).
    /// </summary>
    public bool WithoutImages { get; init; }

    public EvalOptions Validate()
    {
        if (BatchSize < 1) throw new XrayVLException($"batch size must be at least 1 (got {BatchSize})");
        if (Language is not (null or "en" or "zh")) throw new XrayVLException($"language '{Language}' is not supported (en, zh)");
        if (MaxStudies is < 1) throw new XrayVLException($"max studies must be at least 1 (got {MaxStudies})");
        if (ShortAnswerTokens < 1) throw new XrayVLException($"short answer tokens must be at least 1 (got {ShortAnswerTokens})");
        if (Splits.NormalizeName(Split) is null) throw new XrayVLException($"unknown split '{Split}'");
        foreach (string t in Tasks)
            if (!EvalTasks.All.Contains(t)) throw new XrayVLException($"unknown eval task '{t}'; expected some of: {string.Join(", ", EvalTasks.All)}");
        if (WithoutImages && Tasks.Any(t => t != EvalTasks.Report))
            throw new XrayVLException($"without images only the report task can be evaluated (asked for: {string.Join(", ", Tasks)}); use --tasks report");
        return this;
    }
}

/// <summary>The evaluated items and their figures.</summary>
/// <param name="Generations">Answers generated: one per item, except that identical image-less prompts share one.</param>
public sealed record EvalResult(IReadOnlyList<EvalItem> Items, EvalMetrics Metrics, int Generations)
{
    /// <summary>The files <see cref="Evaluator.RunToFolder"/> wrote (plots only where there was something to plot).</summary>
    public IReadOnlyList<string> Written { get; init; } = [];
}

/// <summary>
/// `xrayvl eval`: asks a loaded model about every study of a manifest split — report generation with the front ends'
/// request (<see cref="InstructionPhrases.ReportRequest"/>), closed questions, the finding list and boxes as the training
/// instructions phrase them (<see cref="Instructions.Build"/>) — generating in batches, then scores the answers beside
/// the baselines (<see cref="Baselines"/>: most common, consensus and random training report, and the training report
/// of the nearest training study in the model's vision-feature space: <see cref="VisionLanguageModel.EncodeVision"/>
/// mean-pooled over tokens, then averaged over the study's images) and writes the folder (<see cref="EvalReport"/>).
/// With <see cref="EvalOptions.WithoutImages"/> it asks for reports with no image, for collections whose images are
/// missing. Progress counts prompts answered and studies whose features were computed.
/// </summary>
public sealed class Evaluator(LoadedModel loaded, ILabeler? labeler = null)
{
    private readonly ILabeler labeler = new CachingLabeler(labeler ?? Labeler.Default);
    private readonly InferencePipeline pipeline = new(loaded);

    /// <summary>Reads the manifest, evaluates, writes predictions.jsonl, metrics.json, report.md and plots into <paramref name="outDir"/>.</summary>
    public EvalResult RunToFolder(string manifestPath, string outDir, EvalOptions? options = null, IProgress<(int Done, int Total)>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var result = Run(Manifest.Read(manifestPath), options, progress, cancellationToken);
        return result with { Written = EvalReport.Write(outDir, result.Items, result.Metrics) };
    }

    public EvalResult Run(IReadOnlyList<Study> studies, EvalOptions? options = null, IProgress<(int Done, int Total)>? progress = null,
        CancellationToken cancellationToken = default)
    {
        options = (options ?? new EvalOptions()).Validate();
        string split = Splits.NormalizeName(options.Split)!;
        var notes = new List<string>();
        var inSplit = studies.Where(s => Splits.NormalizeName(s.Split) == split).ToList();
        List<Study> selected;
        if (options.WithoutImages)
        {
            var withReport = inSplit.Where(s => s.ReportText.Length > 0).ToList();
            selected = withReport.Where(s => !s.Images.Any(i => File.Exists(i.Path))).Select(s => s with { Images = [] }).ToList();
            if (selected.Count < withReport.Count)
                notes.Add($"{withReport.Count - selected.Count} studies of the split have image files at hand and were left out of this image-less run");
        }
        else selected = inSplit.Where(s => s.Images.Count > 0).ToList();
        if (options.Language is { } only && !options.Tasks.Any(t => t != EvalTasks.Report))
            selected = selected.Where(s => s.Language == only).ToList();
        if (options.MaxStudies is { } max) selected = selected.Take(max).ToList();
        if (selected.Count == 0)
            throw new XrayVLException(options.WithoutImages
                ? $"no study in the '{split}' split has a report and no image file at hand ({studies.Count} studies in the manifest)"
                : $"no study with images in the '{split}' split ({studies.Count} studies in the manifest); --without-images evaluates reports on text alone");

        var prompts = BuildPrompts(selected, options, notes);
        if (prompts.Count == 0) throw new XrayVLException($"none of the tasks ({string.Join(", ", options.Tasks)}) has a question for the '{split}' split");

        // Baseline pools: training studies with a report, per language.
        var reportLanguages = prompts.Where(p => p.Task == EvalTasks.Report).Select(p => p.Language).Distinct().ToList();
        var pools = new Dictionary<string, List<Study>>();
        if (options.Baselines)
        {
            foreach (string lang in reportLanguages)
            {
                var pool = studies.Where(s => Splits.NormalizeName(s.Split) == Splits.Train && s.Language == lang && s.ReportText.Length > 0).ToList();
                if (pool.Count == 0) notes.Add($"no training report in {lang}: report baselines left out");
                else pools[lang] = pool;
            }
        }
        if (options.WithoutImages && pools.Count > 0) notes.Add("reports were asked for without images: the nearest-neighbour baseline, which retrieves by image, was left out");
        var neighbourPools = pools.ToDictionary(kv => kv.Key, kv => options.WithoutImages ? []
            : kv.Value.Where(s => s.Images.Count > 0).Take(options.NeighbourPool ?? int.MaxValue).ToList());
        var reportStudies = prompts.Where(p => p.Task == EvalTasks.Report && pools.ContainsKey(p.Language)).Select(p => p.Study).DistinctBy(s => s.StudyId).ToList();

        if (!options.WithoutImages)
            foreach (var (lang, pool) in neighbourPools.Where(kv => kv.Value.Count == 0))
                notes.Add($"no training study in {lang} has images: the nearest-neighbour baseline was left out");
        int total = prompts.Count + neighbourPools.Values.Sum(p => p.Count)
            + reportStudies.Count(s => neighbourPools.GetValueOrDefault(PromptLanguage(s, options))?.Count > 0);
        int done = 0;
        void Advance(int n)
        {
            done += n;
            progress?.Report((done, total));
        }
        progress?.Report((0, total));

        // 1. Generate, one task at a time (one GenerationOptions per batch). Prompts without images that are the same
        //    text in the same language get the same answer under deterministic decoding: each is generated once.
        var answers = new string[prompts.Count];
        int generations = 0;
        foreach (var group in prompts.Select((p, i) => (Prompt: p, Index: i)).GroupBy(x => x.Prompt.Task))
        {
            var generation = GenerationFor(group.Key, options);
            var distinct = group.GroupBy(x => x.Prompt.Study.Images.Count == 0 && !generation.DoSample ? $"{x.Prompt.Language}\n{x.Prompt.Question}" : $"#{x.Index}")
                .Select(g => g.ToList()).ToList();
            foreach (var batch in distinct.Chunk(options.BatchSize))
            {
                cancellationToken.ThrowIfCancellationRequested();
                var texts = GenerateBatch(batch.Select(b => b[0].Prompt).ToList(), generation, cancellationToken);
                generations += texts.Count;
                for (int k = 0; k < batch.Length; k++)
                    foreach (var same in batch[k]) answers[same.Index] = texts[k];
                Advance(batch.Sum(b => b.Count));
            }
        }

        // 2. Baselines for the report items.
        var baselineReports = new Dictionary<string, Dictionary<string, string>>();   // study id → baseline → report
        foreach (var (lang, pool) in pools)
        {
            var trainReports = pool.Select(s => s.ReportText).ToList();
            var studiesHere = reportStudies.Where(s => PromptLanguage(s, options) == lang).ToList();
            string common = Baselines.MostCommonReport(trainReports, lang);
            string consensus = Baselines.ConsensusReport(trainReports, lang);
            var random = Baselines.RandomReports(trainReports, studiesHere.Count, options.Seed);
            var neighbourPool = neighbourPools[lang];
            var trainFeatures = neighbourPool.Select(s => { var f = StudyFeatures(s); Advance(1); return f; }).ToList();
            var testFeatures = neighbourPool.Count == 0 ? [] : studiesHere.Select(s => { var f = StudyFeatures(s); Advance(1); return f; }).ToList();
            var nearest = neighbourPool.Count > 0 ? Baselines.NearestNeighbours(trainFeatures, testFeatures) : null;
            for (int i = 0; i < studiesHere.Count; i++)
            {
                var reports = new Dictionary<string, string>
                {
                    [Baselines.MostCommonName] = common, [Baselines.ConsensusName] = consensus, [Baselines.RandomName] = random[i],
                };
                if (nearest is not null) reports[Baselines.NearestNeighbourName] = neighbourPool[nearest[i]].ReportText;
                baselineReports[studiesHere[i].StudyId] = reports;
            }
        }

        // 3. Image-free answers for the finding lists and boxes, from the training split.
        var shortAnswerBaselines = options.Baselines ? ShortAnswerBaselines(studies, prompts, options, notes) : [];

        var items = prompts.Select((p, i) => new EvalItem
        {
            Id = p.Id,
            Task = p.Task,
            StudyId = p.Study.StudyId,
            Language = p.Language,
            Images = p.Study.Images.Select(im => im.Path).ToList(),
            Prompt = p.Question,
            Prediction = answers[i],
            References = [p.Reference],
            ReferenceLabels = p.ReferenceLabels,
            Baselines = p.Task == EvalTasks.Report ? baselineReports.GetValueOrDefault(p.Study.StudyId) : shortAnswerBaselines.GetValueOrDefault(i),
        }).ToList();
        var metrics = EvalReport.Compute(items, loaded.Name, split, notes, labeler);
        return new EvalResult(items, metrics, generations);
    }

    /// <summary>
    /// Prompt index → baseline name → answer, for the closed, finding-list and grounding prompts, none looking at an
    /// image: the training split's majority answer to the same question; its majority findings written as the training
    /// answers write a finding list (<see cref="AnswerFormats.FindingList"/>); and the mean training box of the
    /// asked-for label as box text. Each is scored exactly as the model's answers are.
    /// </summary>
    private Dictionary<int, Dictionary<string, string>> ShortAnswerBaselines(IReadOnlyList<Study> studies, List<Prompt> prompts, EvalOptions options, List<string> notes)
    {
        var result = new Dictionary<int, Dictionary<string, string>>();
        // Closed questions and finding lists are asked of studies with images only: their baselines come from the
        // training studies with images (a manifest may add image-less reports of another population).
        var train = studies.Where(s => Splits.NormalizeName(s.Split) == Splits.Train).ToList();
        var trainWithImages = train.Where(s => s.Images.Count > 0).ToList();
        var vqa = prompts.Select((p, i) => (p, i)).Where(x => x.p.Task == EvalTasks.Vqa).ToList();
        if (vqa.Count > 0)
        {
            // The same questions asked of the training studies (same phrasings, same seed).
            var trainQuestions = BuildPrompts(trainWithImages, options with { Tasks = [EvalTasks.Vqa] }, notes: [])
                .Select(q => (q.Language, q.Question, q.Reference)).ToList();
            var answers = Baselines.QuestionPrior(trainQuestions, vqa.Select(x => (x.p.Language, x.p.Question)).ToList());
            if (answers is null) notes.Add("no training study has closed questions: the question-prior baseline was left out");
            else
                for (int k = 0; k < vqa.Count; k++)
                    result[vqa[k].i] = new() { [Baselines.QuestionPriorName] = answers[k] };
        }
        if (prompts.Any(p => p.Task == EvalTasks.Classify))
        {
            var labels = trainWithImages.Select(s => s.Labels is { } l ? ChexpertLabels.FromDictionary(l)
                : s.ReportText.Length > 0 ? labeler.Label(s.ReportText, s.Language) : null).OfType<ChexpertLabels>().ToList();
            if (labels.Count == 0) notes.Add("no training study has labels or a report: the majority-findings baseline was left out");
            else
            {
                var majority = Baselines.MajorityFindings(labels);
                foreach (var (p, i) in prompts.Select((p, i) => (p, i)).Where(x => x.p.Task == EvalTasks.Classify))
                    result[i] = new() { [Baselines.MajorityFindingsName] = AnswerFormats.FindingList(majority, p.Language) };
            }
        }
        if (prompts.Any(p => p.Task == EvalTasks.Ground))
        {
            var meanBoxes = Baselines.MeanBoxes(train.SelectMany(s => s.Boxes ?? []));
            int missing = 0;
            foreach (var (p, i) in prompts.Select((p, i) => (p, i)).Where(x => x.p.Task == EvalTasks.Ground))
            {
                // The prompt asked for the study box whose text is the reference.
                var asked = (p.Study.Boxes ?? []).FirstOrDefault(b => AnswerFormats.Box(b) == p.Reference);
                if (asked is not null && meanBoxes.TryGetValue(asked.Label, out var mean))
                    result[i] = new() { [Baselines.MeanBoxName] = AnswerFormats.Box(mean) };
                else missing++;
            }
            if (missing > 0) notes.Add($"{missing} grounding questions ask for a label with no training box: the mean-box baseline was left out of the grounding figures");
        }
        return result;
    }

    /// <summary>One question to ask: which study, the prompt text and what a right answer is.</summary>
    private sealed record Prompt(string Id, string Task, Study Study, string Language, string Question, string Reference, IReadOnlyDictionary<string, int?>? ReferenceLabels);

    private static string PromptLanguage(Study s, EvalOptions options) => options.Language ?? (s.Language is "zh" ? "zh" : "en");

    private List<Prompt> BuildPrompts(List<Study> studies, EvalOptions options, List<string> notes)
    {
        var prompts = new List<Prompt>();
        var tasks = options.Tasks;
        foreach (var study in studies)
        {
            string lang = PromptLanguage(study, options);
            if (tasks.Contains(EvalTasks.Report) && study.Language == lang && study.ReportText.Length > 0)
                prompts.Add(new Prompt($"{study.StudyId}-report-{lang}-0", EvalTasks.Report, study, lang, InstructionPhrases.ReportRequest(lang), study.ReportText, null));

            var instructionTasks = new List<string>();
            if (tasks.Contains(EvalTasks.Vqa)) instructionTasks.Add(Instructions.Vqa);
            if (tasks.Contains(EvalTasks.Classify)) instructionTasks.Add(Instructions.Findings);
            if (tasks.Contains(EvalTasks.Ground)) instructionTasks.Add(Instructions.Grounding);
            if (instructionTasks.Count == 0) continue;
            var conversations = Instructions.Build([study], new InstructionOptions
            {
                Seed = options.Seed, Languages = [lang], Tasks = instructionTasks, QuestionsPerStudy = options.QuestionsPerStudy, CrossLanguage = true,
            }, labeler);
            var labels = study.Labels ?? (study.ReportText.Length > 0 ? labeler.Label(study.ReportText, study.Language).ToDictionary() : null);
            foreach (var c in conversations)
            {
                if (c.Turns.Count < 2) continue;
                string task = c.Task switch
                {
                    Instructions.Vqa => EvalTasks.Vqa,
                    Instructions.Findings => EvalTasks.Classify,
                    Instructions.Grounding => EvalTasks.Ground,
                    _ => "",
                };
                if (task.Length == 0) continue;
                prompts.Add(new Prompt(c.Id, task, study, lang, c.Turns[0].Text, c.Turns[1].Text, task == EvalTasks.Classify ? labels : null));
            }
        }
        foreach (string task in tasks.Where(t => prompts.All(p => p.Task != t)))
            notes.Add(task == EvalTasks.Ground ? "no study of the split has boxes: grounding was not evaluated" : $"no question for task '{task}' in the split");
        return prompts;
    }

    private GenerationOptions GenerationFor(string task, EvalOptions options)
    {
        var decoding = pipeline.Decoding(options.Generation);
        return task == EvalTasks.Report ? decoding : decoding with { MaxNewTokens = Math.Min(decoding.MaxNewTokens, options.ShortAnswerTokens) };
    }

    /// <summary>Answers of one batch: each prompt a first turn about its study's images, as the front ends ask it.</summary>
    private List<string> GenerateBatch(IReadOnlyList<Prompt> batch, GenerationOptions generation, CancellationToken cancellationToken) =>
        pipeline.GenerateBatch(batch.Select(prompt => (
                InferencePipeline.FirstTurn(prompt.Question, prompt.Study.Images.Count, prompt.Language),
                (IReadOnlyList<GrayImage>)prompt.Study.Images.Select(i => ImageFile.Load(i.Path)).ToList())).ToList(),
            generation, cancellationToken);

    /// <summary>(N, C, S, S) preprocessed images of a study, on the CPU.</summary>
    private Tensor Pixels(Study study) =>
        Preprocess.Batch(study.Images.Select(i => ImageFile.Load(i.Path)), loaded.Preprocess);

    /// <summary>The study's vision features: encoder tokens mean-pooled, then averaged over its images → (Dv).</summary>
    private float[] StudyFeatures(Study study)
    {
        using var scope = NewDisposeScope();
        using var _ = torch.no_grad();
        var model = loaded.Model;
        var pixels = Pixels(study).to(model.LanguageModel.DType, model.LanguageModel.Device);   // (N, C, S, S)
        var features = model.EncodeVision(pixels);                                               // (N, Ntok, Dv)
        return features.mean([1]).mean([0]).to(ScalarType.Float32).cpu().data<float>().ToArray();  // (Dv)
    }
}
