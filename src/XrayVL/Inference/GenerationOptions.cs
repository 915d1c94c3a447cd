namespace XrayVL.Inference;

/// <summary>How to pick tokens; names and meanings follow Hugging Face's GenerationConfig.</summary>
public sealed record GenerationOptions
{
    /// <summary>Longest continuation; a report of a few findings fits in 256 tokens of the project's tokenizer.</summary>
    public int MaxNewTokens { get; init; } = 256;
    /// <summary>1: greedy or sampling; more: beam search (R2Gen uses 3).</summary>
    public int NumBeams { get; init; } = 1;
    /// <summary>Sample from the (warped) distribution instead of taking the most likely token.</summary>
    public bool DoSample { get; init; }
    /// <summary>Divides the logits before sampling (&lt; 1 sharpens); greedy and beam search ignore it.</summary>
    public double Temperature { get; init; } = 1.0;
    /// <summary>Sample among the k most likely tokens only; 0 turns it off.</summary>
    public int TopK { get; init; }
    /// <summary>Nucleus sampling: the smallest set of most likely tokens whose probability reaches p; 1 turns it off.</summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>CTRL-style: logits of tokens already present (prompt ids + generated) are divided by it when positive and
    /// multiplied when negative; 1 turns it off.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    /// <summary>Forbid repeating any n-gram of this size (prompt ids + generated); 0 turns it off.</summary>
    public int NoRepeatNgramSize { get; init; }
    /// <summary>Beam scores are sum(log p) / length^LengthPenalty; above 1 favours longer sequences.</summary>
    public double LengthPenalty { get; init; } = 1.0;
    /// <summary>Generation of a row ends at any of these ids (end of sequence, end of turn); the stop id is not returned.</summary>
    public IReadOnlySet<int> StopTokenIds { get; init; } = new HashSet<int>();
    /// <summary>Seeds sampling for reproducible output; null draws from the global generator.</summary>
    public int? Seed { get; init; }
    /// <summary>Beam search ends as soon as NumBeams hypotheses are finished (true) or when no running beam can beat them (false).</summary>
    public bool EarlyStopping { get; init; }

    public GenerationOptions Validate()
    {
        static void Require(bool ok, string message)
        {
            if (!ok) throw new XrayVLException("invalid generation options: " + message);
        }
        Require(MaxNewTokens > 0, $"max_new_tokens must be positive, got {MaxNewTokens}");
        Require(NumBeams > 0, $"num_beams must be positive, got {NumBeams}");
        Require(!(DoSample && NumBeams > 1), "sampling with beam search is not supported (set do_sample false or num_beams 1)");
        Require(Temperature > 0 && double.IsFinite(Temperature), $"temperature must be positive, got {Temperature}");
        Require(TopK >= 0, $"top_k must be 0 (off) or positive, got {TopK}");
        Require(TopP > 0 && TopP <= 1, $"top_p must be in (0, 1], got {TopP}");
        Require(RepetitionPenalty > 0 && double.IsFinite(RepetitionPenalty), $"repetition_penalty must be positive, got {RepetitionPenalty}");
        Require(NoRepeatNgramSize >= 0, $"no_repeat_ngram_size must be 0 (off) or positive, got {NoRepeatNgramSize}");
        Require(double.IsFinite(LengthPenalty), $"length_penalty must be finite, got {LengthPenalty}");
        Require(StopTokenIds.All(id => id >= 0), "stop token ids must not be negative");
        return this;
    }
}
