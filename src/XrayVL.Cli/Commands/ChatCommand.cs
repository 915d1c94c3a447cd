using System.CommandLine;
using XrayVL.Imaging;
using XrayVL.Inference;

namespace XrayVL.Cli;

/// <summary>`xrayvl chat IMAGE`: a multi-turn conversation about an X-ray, answers streamed as they are written.</summary>
public static class ChatCommand
{
    private const string Help = "Commands: /image PATH (add an X-ray to the next question), /clear (new conversation), /lang en|zh, /exit";

    public static Command Create(CliIO io)
    {
        var image = new Argument<string?>("image") { Description = "X-ray file (PNG, JPEG or DICOM)", Arity = ArgumentArity.ZeroOrOne };
        var model = CommonOptions.Model();
        var dtype = CommonOptions.DType();
        var lang = CommonOptions.Language();
        var maxTokens = CommonOptions.MaxTokens();
        var temperature = CommonOptions.Temperature();
        var seed = CommonOptions.Seed();
        var command = new Command("chat", "Chat about a chest X-ray (multi-turn, streamed answers)") { image, model, dtype, lang, maxTokens, temperature, seed };
        command.SetAction(async (parse, cancel) =>
        {
            string? first = parse.GetValue(image);
            var firstImage = first is null ? null : ImageFile.Load(first);
            using var loaded = ModelLocator.LoadPipeline(io, parse.GetValue(model), parse.GetValue(dtype)!);
            var pipeline = loaded.Pipeline;
            string language = CommonOptions.LanguageOf(parse, lang, pipeline.DefaultLanguage);
            var session = new ChatSession(pipeline, language);
            if (firstImage != null) session.AddImage(firstImage);
            double temp = parse.GetValue(temperature);
            var options = pipeline.Decoding() with
            {
                MaxNewTokens = parse.GetValue(maxTokens),
                DoSample = temp > 0,
                Temperature = temp > 0 ? temp : 1.0,
                Seed = parse.GetValue(seed),
            };

            string format = pipeline is XrayGlmPipeline ? " (XrayGLM prompt format; one X-ray per conversation)" : "";
            io.Err.WriteLine($"XrayVL chat — model {loaded.Name}{format}. {App.DisclaimerIn(language)}");
            io.Err.WriteLine(Help + "; Ctrl-C stops an answer, and at the prompt ends the chat");
            // Ctrl-C while an answer is written stops that answer (the question is dropped, the conversation goes on);
            // at the prompt it ends the chat.
            using var session_ = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            CancellationTokenSource? answering = null;
            using var interrupts = io.Interrupts.Handle(() =>
            {
                var current = Volatile.Read(ref answering);
                if (current is not null) current.Cancel();
                else session_.Cancel();
                return true;
            });
            while (true)
            {
                io.Out.Write("you> ");
                io.Out.Flush();
                // TextReader.ReadLineAsync ignores the token on a console: wait on the read so Ctrl-C ends the chat at once.
                string? line;
                try
                {
                    line = await Task.Run(io.In.ReadLine, CancellationToken.None).WaitAsync(session_.Token);
                }
                catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
                {
                    io.Out.WriteLine();
                    break;
                }
                if (line is null) break;                                      // end of input
                line = line.Trim();
                if (line.Length == 0) continue;
                if (line.StartsWith('/'))
                {
                    if (!HandleCommand(line, session, io)) break;
                    continue;
                }
                IAsyncEnumerable<string> answer;
                using var thisAnswer = CancellationTokenSource.CreateLinkedTokenSource(cancel);
                try
                {
                    answer = session.AskAsync(line, options, thisAnswer.Token);
                }
                catch (XrayVLException e)
                {
                    io.Err.WriteLine($"error: {e.Message}");                  // a bad turn does not end the chat
                    if (session.Messages.Count > 0) io.Err.WriteLine("(/clear starts a new conversation)");
                    continue;
                }
                Volatile.Write(ref answering, thisAnswer);
                io.Out.Write("xrayvl> ");
                try
                {
                    await foreach (var piece in answer)
                    {
                        io.Out.Write(piece);
                        io.Out.Flush();
                    }
                }
                catch (XrayVLException e)
                {
                    io.Err.WriteLine($"error: {e.Message}");
                }
                catch (OperationCanceledException) when (thisAnswer.IsCancellationRequested && !cancel.IsCancellationRequested)
                {
                    io.Out.WriteLine();
                    io.Err.Write("(answer stopped; that question is not kept in the conversation)");
                }
                finally
                {
                    Volatile.Write(ref answering, null);
                }
                io.Out.WriteLine();
            }
            return 0;
        });
        return command;
    }

    /// <summary>Runs a /command; false ends the chat.</summary>
    private static bool HandleCommand(string line, ChatSession session, CliIO io)
    {
        string[] parts = line.Split(' ', 2, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        switch (parts[0])
        {
            case "/exit" or "/quit":
                return false;
            case "/clear":
                session.Clear();
                io.Err.WriteLine("(new conversation: add an image with /image PATH)");
                return true;
            case "/image" when parts.Length == 2:
                try
                {
                    bool restarted = session.AddImage(ImageFile.Load(parts[1]));
                    io.Err.WriteLine(restarted ? $"(image: {parts[1]}; a new conversation, as this model reads one X-ray per conversation)" : $"(image added: {parts[1]})");
                }
                catch (XrayVLException e)
                {
                    io.Err.WriteLine($"error: {e.Message}");
                }
                return true;
            case "/lang" when parts.Length == 2 && parts[1] is "en" or "zh":
                session.Language = parts[1];
                io.Err.WriteLine($"(language: {parts[1]})");
                return true;
            default:
                io.Err.WriteLine(Help);
                return true;
        }
    }
}
