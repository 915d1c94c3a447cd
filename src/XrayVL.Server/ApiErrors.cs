using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.Serving;

namespace XrayVL.Server;

/// <summary>
/// An error with its HTTP status, answered as OpenAI does: <c>{"error": {"message", "type", "param", "code"}}</c>.
/// <paramref name="code"/> replaces the status's default code where OpenAI has a more precise one (model_not_found);
/// <paramref name="retryAfterSeconds"/> is sent as Retry-After with a 503.
/// </summary>
public sealed class ApiException(int status, string message, string? param = null, string? code = null, int? retryAfterSeconds = null)
    : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public int? RetryAfterSeconds { get; } = retryAfterSeconds;
}

/// <summary>What a failure is answered with (see <see cref="ApiErrors.Describe"/>).</summary>
public sealed record ApiError(int Status, string Message, string? Param = null, string? Code = null, int? RetryAfterSeconds = null);

public static class ApiErrors
{
    /// <summary>Longest user value an error message quotes: enough to recognise it, never the whole of a hostile input.</summary>
    public const int MaxQuoted = 64;
    /// <summary>Longest error message sent (a backstop: messages quote values through <see cref="Quote"/>).</summary>
    public const int MaxMessage = 1000;
    /// <summary>A full queue drains within about a second of decode steps.</summary>
    public const int DefaultRetryAfterSeconds = 1;

    /// <summary>A user value for an error message: in quotes, cut to <see cref="MaxQuoted"/> characters with its length said.</summary>
    public static string Quote(string value) =>
        value.Length <= MaxQuoted ? $"\"{value}\"" : $"\"{value[..MaxQuoted]}…\" ({value.Length} characters)";

    /// <summary>The status and message a failure is answered with. Unknown exceptions say nothing about themselves (500).</summary>
    public static ApiError Describe(Exception error) => error switch
    {
        ApiException api => new(api.Status, api.Message, api.Param, api.Code, api.RetryAfterSeconds),
        ImageLimitException e => new(StatusCodes.Status413PayloadTooLarge, e.Message),
        SchedulerBusyException e => new(StatusCodes.Status503ServiceUnavailable, e.Message, RetryAfterSeconds: DefaultRetryAfterSeconds),
        XrayVLException e => new(StatusCodes.Status400BadRequest, e.Message),
        JsonException e => new(StatusCodes.Status400BadRequest, $"the body is not valid JSON: {e.Message}"),
        BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge } =>
            new(StatusCodes.Status413PayloadTooLarge, "the request body is larger than the upload limit"),
        BadHttpRequestException e => new(e.StatusCode, "the request could not be read: " + e.Message),
        InvalidDataException e when e.Message.Contains("limit", StringComparison.OrdinalIgnoreCase) =>
            new(StatusCodes.Status413PayloadTooLarge, "the upload is larger than the limit"),
        InvalidDataException e => new(StatusCodes.Status400BadRequest, "the upload could not be read: " + e.Message),
        _ => new(StatusCodes.Status500InternalServerError, BugMessage),
    };

    /// <summary>What a client hears of a failure that is XrayVL's fault (a bug, never its request).</summary>
    public const string BugMessage = "internal server error: this is a bug in XrayVL, not a problem with the request; " +
        "the server log names it (please report it with the time of the request)";

    public static string TypeFor(int status) => status switch
    {
        401 => "authentication_error",
        404 => "not_found_error",
        409 => "conflict_error",
        413 or 414 or 415 or 400 => "invalid_request_error",
        503 => "server_busy",
        _ => status >= 500 ? "server_error" : "invalid_request_error",
    };

    /// <summary>OpenAI's "code" is a string naming the error (typed clients parse it as one), never a number.</summary>
    public static string CodeFor(int status) => status switch
    {
        400 => "bad_request",
        401 => "invalid_api_key",
        404 => "not_found",
        409 => "conversation_busy",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        503 => "server_busy",
        _ => status >= 500 ? "internal_error" : $"http_{status}",
    };

    public static JsonObject Body(int status, string message, string? param = null, string? code = null) => new()
    {
        ["error"] = new JsonObject
        {
            ["message"] = message.Length <= MaxMessage ? message : message[..MaxMessage] + "…",
            ["type"] = TypeFor(status),
            ["param"] = param,
            ["code"] = code ?? CodeFor(status),
        },
    };

    public static JsonObject Body(ApiError error) => Body(error.Status, error.Message, error.Param, error.Code);

    public static Task WriteAsync(HttpContext context, int status, string message, string? param = null) =>
        WriteAsync(context, new ApiError(status, message, param));

    public static async Task WriteAsync(HttpContext context, ApiError error)
    {
        context.Response.StatusCode = error.Status;
        context.Response.ContentType = "application/json; charset=utf-8";
        if (error.Status == StatusCodes.Status401Unauthorized) context.Response.Headers.WWWAuthenticate = "Bearer";
        if (error.Status == StatusCodes.Status503ServiceUnavailable)
            context.Response.Headers.RetryAfter = (error.RetryAfterSeconds ?? DefaultRetryAfterSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture);
        await context.Response.WriteAsync(Body(error).ToJsonString(), context.RequestAborted);
    }
}
