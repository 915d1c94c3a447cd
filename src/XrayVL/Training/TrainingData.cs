using XrayVL.Data;
using XrayVL.Data.Sources;
using XrayVL.Inference;
using XrayVL.Modeling;
using XrayVL.Text;

namespace XrayVL.Training;

/// <summary>
/// One training sequence: token ids with every image placeholder already expanded to the image's Nv positions, labels
/// aligned with them (<see cref="Constants.IgnoreIndex"/> where nothing is learned), and its image files in reading order.
/// </summary>
public sealed record TrainSample(int[] Ids, int[] Labels, IReadOnlyList<string> Images);

/// <summary>A prompt for sample generations: expanded prompt ids (ending with the assistant header), its images, and the reference answer.</summary>
public sealed record PromptSample(int[] PromptIds, IReadOnlyList<string> Images, string Prompt, string Reference, string Language);

/// <summary>
/// A stage's item before tokenisation: a conversation (chat format) or a plain report text, so that the tokenizer can
/// be trained on exactly the texts the stages will use.
/// </summary>
public sealed record StageItem(TrainingConversation? Chat, string? PlainText, string Language)
{
    /// <summary>The texts a tokenizer should learn from.</summary>
    public IEnumerable<string> Texts => PlainText is not null ? [PlainText] : Chat!.Turns.Select(t => t.Text);
}

/// <summary>A stage's items per split, with an account of what was left out.</summary>
public sealed record StageItems(IReadOnlyList<StageItem> Train, IReadOnlyList<StageItem> Val, IReadOnlyList<string> Notes);

/// <summary>A stage's tokenised data.</summary>
public sealed record StageData(IReadOnlyList<TrainSample> Train, IReadOnlyList<TrainSample> Val, IReadOnlyList<PromptSample> Prompts, IReadOnlyList<string> Notes);

/// <summary>
/// Turns a recipe's data section into training samples: sources → manifests (<see cref="DatasetBuilder"/>, written to
/// OUT/data/NAME) → per stage, conversations (<see cref="Instructions"/>) or report texts → token ids and labels
/// (<see cref="ChatTemplate"/>, with the default system prompt in the conversation's language, as inference uses it)
/// → image placeholders expanded (<see cref="VisionLanguageModel.ExpandImagePlaceholders"/>).
/// </summary>
public static class TrainingData
{
    /// <summary>Reads every source of the recipe into studies (labelled, split), writing each manifest under <paramref name="dataFolder"/>.</summary>
    public static Dictionary<string, List<Study>> BuildSources(TrainRecipe recipe, string? sharedDirectory, string dataFolder, Action<string>? note = null)
    {
        var result = new Dictionary<string, List<Study>>(StringComparer.Ordinal);
        var f = recipe.Data.SplitFractions;
        foreach (var (name, source) in recipe.Data.Sources)
        {
            string? Resolve(string? p) => p is null ? null : recipe.ResolvePath(p, sharedDirectory);
            var options = new SourceOptions
            {
                Input = Resolve(source.Input)!,
                Images = Resolve(source.Images),
                SplitFile = Resolve(source.SplitFile),
                Language = source.Language,
                KeepMissingImages = source.KeepMissingImages,
            };
            var build = DatasetBuilder.Build(source.Source, options, Path.Combine(dataFolder, name),
                new BuildOptions { Seed = recipe.Data.SplitSeed, Fractions = (f[0], f[1], f[2]) });
            var studies = Manifest.Read(build.ManifestPath);
            if (source.TemplatedReports)
            {
                int before = studies.Count;
                studies = TemplatedReports.Complete(studies);
                note?.Invoke($"source {name}: reports written from labels for {(studies.Count - before):N0} studies (each also in Chinese)");
            }
            int withImages = studies.Count(HasImagesOnDisk);
            note?.Invoke($"source {name} ({source.Source}): {studies.Count} studies, {withImages} with images on disk; " +
                         $"split {string.Join(", ", studies.GroupBy(s => s.Split ?? "none").OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}"))}");
            result[name] = studies;
        }
        return result;
    }

    /// <summary>The stage's conversations or texts for training (its mixture's splits, repeated) and validation (val split).</summary>
    public static StageItems Items(StageRecipe stage, TrainRecipe recipe, IReadOnlyDictionary<string, List<Study>> sources)
    {
        if (stage.Kind == StageRecipe.Vision) return new StageItems([], [], []);   // labelled images, not conversations (Trainer.Vision.cs)
        var train = new List<StageItem>();
        var val = new List<StageItem>();
        var notes = new List<string>();
        var valSeen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var mix in stage.Data)
        {
            var studies = sources[mix.Source];
            var fromTrain = ItemsOf(stage, recipe, mix, studies.Where(s => mix.Splits.Contains(s.Split ?? "") && mix.Admits(s)).ToList(), notes);
            if (mix.Limit is { } limit && fromTrain.Count > limit)
            {
                var random = new Random(Seeds.Mix(recipe.Seed, Seeds.Of(stage.Name), Seeds.Of(mix.Source)));
                notes.Add($"{mix.Source}: {limit} of {fromTrain.Count} items used (limit)");
                fromTrain = fromTrain.OrderBy(_ => random.Next()).Take(limit).ToList();
            }
            for (int r = 0; r < mix.Repeat; r++) train.AddRange(fromTrain);
            // Validation: the val split of every component once (components sharing a source share it).
            if (valSeen.Add($"{mix.Source}/{string.Join(",", stage.TasksFor(mix))}/{mix.Images}"))
                val.AddRange(ItemsOf(stage, recipe, mix, studies.Where(s => s.Split == Splits.Val).ToList(), notes: null));
        }
        return new StageItems(train, val, notes);
    }

    private static List<StageItem> ItemsOf(StageRecipe stage, TrainRecipe recipe, MixRecipe mix, List<Study> studies, List<string>? notes)
    {
        bool wantImages = stage.Kind != StageRecipe.Text && mix.Images;
        if (stage.Kind == StageRecipe.Text && stage.TextFormat == "plain")
        {
            return studies.Select(s => (Text: s.ReportText, s.Language)).Where(t => t.Text.Length > 0)
                .DistinctBy(t => t.Language + "\u0001" + t.Text).Select(t => new StageItem(null, t.Text, t.Language)).ToList();
        }
        if (wantImages)
        {
            int before = studies.Count;
            studies = studies.Where(HasImagesOnDisk).ToList();
            if (notes is not null && before > studies.Count)
                notes.Add($"{mix.Source}: {before - studies.Count} of {before} studies have no image on disk and are left out of this image stage");
        }
        var options = new InstructionOptions
        {
            Seed = recipe.Seed,
            Languages = recipe.Data.Languages,
            Tasks = stage.TasksFor(mix),
            QuestionsPerStudy = recipe.Data.QuestionsPerStudy,
            CrossLanguage = recipe.Data.CrossLanguage,
        };
        var conversations = Instructions.Build(studies, options);
        if (wantImages)
            return conversations.Where(c => c.Images.Count > 0).Select(c => new StageItem(c, null, c.Language)).ToList();
        // Text only: drop the images; equal answers (the same caption under two images, asked in other words) are learned once.
        return conversations
            .Select(c => c with { Images = [], Turns = c.Turns.Select(t => t with { Images = 0 }).ToList() })
            .DistinctBy(c => c.Task + "\u0001" + c.Language + "\u0001" + string.Join("\u0001", c.Turns.Where(t => t.Role == "assistant").Select(t => t.Text)))
            .Select(c => new StageItem(c, null, c.Language)).ToList();
    }

    public static bool HasImagesOnDisk(Study study) => study.Images.Count > 0 && study.Images.All(i => File.Exists(i.Path));

    /// <summary>Texts to train the tokenizer on: every stage's training items, the sources' training notes, and the system prompts.</summary>
    public static IEnumerable<string> TokenizerCorpus(IEnumerable<StageItems> stages, IReadOnlyDictionary<string, List<Study>> sources)
    {
        foreach (var stage in stages)
            foreach (var item in stage.Train.Distinct())
                foreach (string text in item.Texts) yield return text;
        foreach (var study in sources.Values.SelectMany(s => s).Where(s => s.Split == Splits.Train && s.Notes is { Length: > 0 }))
            yield return study.Notes!;
        yield return ChatTemplate.DefaultSystemPrompt("en");
        yield return ChatTemplate.DefaultSystemPrompt("zh");
    }

    /// <summary>Tokenises a stage's items: training and validation samples, and up to <see cref="StageRecipe.Samples"/> prompts.</summary>
    public static StageData Tokenize(StageItems items, StageRecipe stage, XrayTokenizer tokenizer, int tokensPerImage, int maxSeqLen, int seed)
    {
        var notes = new List<string>(items.Notes);
        int truncated = 0, dropped = 0;
        List<TrainSample> Render(IEnumerable<StageItem> list)
        {
            var samples = new List<TrainSample>();
            foreach (var item in list)
            {
                var (sample, wasTruncated) = ToSample(item, tokenizer, tokensPerImage, maxSeqLen);
                if (wasTruncated) truncated++;
                if (sample is null) dropped++;
                else samples.Add(sample);
            }
            return samples;
        }
        var train = Render(items.Train);
        var val = Render(items.Val);
        if (truncated > 0) notes.Add($"{truncated} sequences longer than {maxSeqLen} tokens were cut at the end");
        if (dropped > 0) notes.Add($"{dropped} sequences left out: nothing to learn within {maxSeqLen} tokens (or an image cut off)");

        // Prompts for sample generations: validation items (else training ones), report requests first, in a seeded order.
        var pool = items.Val.Count > 0 ? items.Val : items.Train;
        var rng = new Random(seed);
        var prompts = pool.Distinct().OrderBy(_ => rng.Next()).OrderBy(i => i.Chat?.Task == Instructions.Report ? 0 : 1)
            .Select(i => ToPrompt(i, tokenizer, tokensPerImage, maxSeqLen)).OfType<PromptSample>().Take(stage.Samples).ToList();
        return new StageData(train, val, prompts, notes);
    }

    /// <summary>One item as a training sequence; null when nothing learned survives <paramref name="maxSeqLen"/>.</summary>
    public static (TrainSample? Sample, bool Truncated) ToSample(StageItem item, XrayTokenizer tokenizer, int tokensPerImage, int maxSeqLen)
    {
        int[] ids, labels;
        IReadOnlyList<string> images = [];
        if (item.PlainText is not null)
        {
            // End-of-text on both sides: the first word is predicted too, and the model learns where a report ends.
            ids = [tokenizer.EosId, .. tokenizer.EncodeSegment(item.PlainText), tokenizer.EosId];
            labels = [.. ids];
        }
        else
        {
            var rendered = ChatTemplate.Render(ToChat(item.Chat!, item.Chat!.Turns.Count), tokenizer, addGenerationPrompt: false);
            (ids, labels) = VisionLanguageModel.ExpandImagePlaceholders(rendered.Ids, rendered.Labels, tokenizer.ImageId, tokensPerImage);
            images = item.Chat.Images;
        }
        bool truncated = ids.Length > maxSeqLen;
        if (truncated)
        {
            // Cutting through an image's positions would leave a partial image: leave such a sample out.
            int imagePositions = ids.Count(id => id == tokenizer.ImageId);
            ids = ids[..maxSeqLen];
            labels = labels[..maxSeqLen];
            if (ids.Count(id => id == tokenizer.ImageId) != imagePositions) return (null, true);
        }
        // The loss predicts labels[1..]: a sample needs at least one learned token after the first position.
        if (!labels.Skip(1).Any(l => l != Constants.IgnoreIndex)) return (null, truncated);
        return (new TrainSample(ids, labels, images), truncated);
    }

    private static PromptSample? ToPrompt(StageItem item, XrayTokenizer tokenizer, int tokensPerImage, int maxSeqLen)
    {
        if (item.PlainText is not null)
        {
            // The report's first few words as the prompt, the whole report as the reference.
            int[] textIds = tokenizer.EncodeSegment(item.PlainText);
            int[] prompt = [tokenizer.EosId, .. textIds.Take(4)];
            return new PromptSample(prompt, [], tokenizer.Decode(prompt.Skip(1)), item.PlainText, item.Language);
        }
        var chat = item.Chat!;
        int firstAnswer = chat.Turns.ToList().FindIndex(t => t.Role == "assistant");
        if (firstAnswer < 1) return null;
        int[] promptIds = InferencePipeline.PromptIds(ToChat(chat, firstAnswer), tokenizer);       // rendered as every front end asks
        var ids = InferencePipeline.ExpandImages(promptIds, tokenizer.ImageId, tokensPerImage);
        if (ids.Length >= maxSeqLen) return null;
        string question = string.Join(" / ", chat.Turns.Take(firstAnswer).Select(t => t.Text));
        return new PromptSample(ids, chat.Images, question, chat.Turns[firstAnswer].Text, chat.Language);
    }

    /// <summary>The first <paramref name="turnCount"/> turns as a chat, with the default system prompt of the conversation's language.</summary>
    private static Conversation ToChat(TrainingConversation c, int turnCount) =>
        new(ChatTemplate.DefaultSystemPrompt(c.Language), c.Turns.Take(turnCount).Select(t => new Turn(
            t.Role switch
            {
                "user" => TurnRole.User,
                "assistant" => TurnRole.Assistant,
                _ => throw new XrayVLException($"conversation {c.Id}: unknown role '{t.Role}'"),
            }, t.Text, t.Images)));
}
