using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using XrayVL.Imaging;
using XrayVL.Serving;

namespace XrayVL.Server;

/// <summary>An error with its HTTP status, answered as OpenAI does: <c>{"error": {"message", "type", "param", "code"}}</c>.</summary>
public sealed class ApiException(int status, string message, string? param = null) : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
}

public static class ApiErrors
{
    /// <summary>The status and message a failure is answered with. Unknown exceptions say nothing about themselves (500).</summary>
    public static (int Status, string Message, string? Param) Describe(Exception error) => error switch
    {
        ApiException api => (api.Status, api.Message, api.Param),
        ImageLimitException e => (StatusCodes.Status413PayloadTooLarge, e.Message, null),
        SchedulerBusyException e => (StatusCodes.Status503ServiceUnavailable, e.Message, null),
        XrayVLException e => (StatusCodes.Status400BadRequest, e.Message, null),
        JsonException e => (StatusCodes.Status400BadRequest, $"the body is not valid JSON: {e.Message}", null),
        BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge } =>
            (StatusCodes.Status413PayloadTooLarge, "the request body is larger than the upload limit", null),
        BadHttpRequestException e => (e.StatusCode, "the request could not be read: " + e.Message, null),
        InvalidDataException e when e.Message.Contains("limit", StringComparison.OrdinalIgnoreCase) =>
            (StatusCodes.Status413PayloadTooLarge, "the upload is larger than the limit", null),
        InvalidDataException e => (StatusCodes.Status400BadRequest, "the upload could not be read: " + e.Message, null),
        _ => (StatusCodes.Status500InternalServerError, "internal server error", null),
    };

    public static string TypeFor(int status) => status switch
    {
        401 => "authentication_error",
        404 => "not_found_error",
        409 => "conflict_error",
        413 or 415 or 400 => "invalid_request_error",
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
        415 => "unsupported_media_type",
        503 => "server_busy",
        _ => status >= 500 ? "internal_error" : $"http_{status}",
    };

    public static JsonObject Body(int status, string message, string? param = null) => new()
    {
        ["error"] = new JsonObject
        {
            ["message"] = message,
            ["type"] = TypeFor(status),
            ["param"] = param,
            ["code"] = CodeFor(status),
        },
    };

    public static async Task WriteAsync(HttpContext context, int status, string message, string? param = null)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json; charset=utf-8";
        if (status == StatusCodes.Status401Unauthorized) context.Response.Headers.WWWAuthenticate = "Bearer";
        if (status == StatusCodes.Status503ServiceUnavailable) context.Response.Headers.RetryAfter = "1";
        await context.Response.WriteAsync(Body(status, message, param).ToJsonString(), context.RequestAborted);
    }
}
