using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using XrayVL.Kernels;
using XrayVL.Server;

namespace XrayVL.Cli;

/// <summary>`xrayvl serve`: the web page and the HTTP API (OpenAI-compatible chat completions, report, health).</summary>
public static class ServeCommand
{
    public const string ApiKeyVariable = "XRAYVL_API_KEY";

    public static Command Create(CliIO io)
    {
        var model = CommonOptions.Model();
        var dtype = CommonOptions.DType();
        var urls = new Option<string>("--urls")
        {
            Description = "Addresses to listen on, separated by ';' (loopback only unless --allow-remote)",
            DefaultValueFactory = _ => "http://127.0.0.1:7860",
        };
        var apiKey = new Option<string?>("--api-key")
        {
            Description = $"Require 'Authorization: Bearer KEY' on /v1 and /api (or set {ApiKeyVariable}, which `ps` does not show)",
        };
        var allowRemote = new Option<bool>("--allow-remote") { Description = "Allow non-loopback addresses in --urls (set an API key too)" };
        var maxBatch = new Option<int>("--max-batch") { Description = "Requests decoded together in one batch", DefaultValueFactory = _ => 8 };
        var maxUploadMb = new Option<int>("--max-upload-mb") { Description = "Largest image upload, in MiB", DefaultValueFactory = _ => 20 };
        var sessionMinutes = new Option<int>("--session-minutes") { Description = "Idle minutes after which a conversation is forgotten", DefaultValueFactory = _ => 30 };

        var command = new Command("serve", "Serve a model: web page (upload an X-ray, report, chat) and HTTP API (/v1/chat/completions, /api/report).")
        {
            model, dtype, urls, apiKey, allowRemote, maxBatch, maxUploadMb, sessionMinutes,
        };
        command.SetAction(async (parse, cancel) =>
        {
            string modelDir = ModelLocator.Resolve(parse.GetValue(model));
            string? key = parse.GetValue(apiKey) ?? NullIfEmpty(Environment.GetEnvironmentVariable(ApiKeyVariable));
            var options = new ServerOptions
            {
                ModelDir = modelDir,
                DType = parse.GetValue(dtype)!,
                Urls = [.. parse.GetValue(urls)!.Split([';', ','], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)],
                ApiKey = key,
                AllowRemote = parse.GetValue(allowRemote),
                MaxBatch = parse.GetValue(maxBatch),
                MaxUploadBytes = (long)parse.GetValue(maxUploadMb) << 20,
                SessionIdleTimeout = TimeSpan.FromMinutes(parse.GetValue(sessionMinutes)),
            }.Validate();
            if (options.AllowRemote && key is null)
                io.Err.WriteLine("warning: serving beyond this machine without an API key: anyone who can reach it can use it (set --api-key)");

            io.Err.WriteLine($"Loading {modelDir} ...");
            var app = ModelLocator.WithLoadingBar(io, modelDir, WeightFormats.Parse(options.DType),
                progress => ServerApp.Build(options with { LoadProgress = progress }));
            await app.StartAsync(cancel);
            var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
            io.Err.WriteLine($"XrayVL is serving {app.Services.GetRequiredService<XrayServer>().ModelId} at {string.Join(", ", addresses)}" +
                             (key is null ? "" : " (API key required)"));
            io.Err.WriteLine(App.Disclaimer);
            io.Err.WriteLine("Press Ctrl+C to stop.");
            try
            {
                await app.WaitForShutdownAsync(cancel);
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested) { }
            await app.StopAsync(CancellationToken.None);
            await app.DisposeAsync();
            return 0;
        });
        return command;
    }

    private static string? NullIfEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value;
}
