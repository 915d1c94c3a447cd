using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.Serving;

namespace XrayVL.Server;

/// <summary>Reading images sent to the server: multipart uploads and data: URIs, within the limits, sniffed by content.</summary>
public static class Uploads
{
    public const string ImageField = "image";
    /// <summary>Fields of a form at most: the image and a few settings; far more is not a form this server reads.</summary>
    public const int MaxFields = 32;
    /// <summary>Longest value of a non-file field: settings are short.</summary>
    public const int MaxFieldBytes = 64 * 1024;

    /// <summary>
    /// A form over one of the reader's limits, saying which limit and its value. ASP.NET Core names the limit in its
    /// message ("Form value count limit 32 exceeded.") but that wording is not an API, so anything unrecognised is
    /// still answered with every limit.
    /// </summary>
    private static ApiException FormLimit(InvalidDataException e, long maxBytes)
    {
        string message = e.Message;
        if (message.Contains("count", StringComparison.OrdinalIgnoreCase))
            return new(StatusCodes.Status400BadRequest, $"the form has more than {MaxFields} fields, the limit");
        if (message.Contains("value length", StringComparison.OrdinalIgnoreCase))
            return new(StatusCodes.Status400BadRequest, $"a form field is longer than {MaxFieldBytes / 1024} KiB, the limit for fields other than the image");
        if (message.Contains("body length", StringComparison.OrdinalIgnoreCase))
            return new(StatusCodes.Status413PayloadTooLarge, $"the upload is larger than the limit of {maxBytes / 1048576.0:0.#} MiB");
        if (message.Contains("header", StringComparison.OrdinalIgnoreCase))
            return new(StatusCodes.Status400BadRequest, "a part of the form has headers longer than the limit of 16 KiB");
        return new(StatusCodes.Status400BadRequest,
            $"the form could not be read within its limits ({MaxFields} fields, {MaxFieldBytes / 1024} KiB per field, {maxBytes / 1048576.0:0.#} MiB in all)");
    }

    /// <summary>A multipart form with an image file: its bytes and the form's other fields.</summary>
    public static async Task<(byte[] Bytes, IFormCollection Form)> ReadImageFormAsync(HttpContext context, long maxBytes)
    {
        var request = context.Request;
        if (request.ContentLength is long length && length > maxBytes + 64 * 1024)
            throw new ApiException(StatusCodes.Status413PayloadTooLarge, $"the upload is {length / 1048576.0:0.#} MiB, above the limit of {maxBytes / 1048576.0:0.#} MiB");
        if (!request.HasFormContentType || !(request.ContentType ?? "").StartsWith("multipart/form-data", StringComparison.OrdinalIgnoreCase))
            throw new ApiException(StatusCodes.Status415UnsupportedMediaType, $"send multipart/form-data with the X-ray in a file field named '{ImageField}'");
        IFormCollection form;
        try
        {
            form = await request.ReadFormAsync(new FormOptions
            {
                MultipartBodyLengthLimit = maxBytes + 64 * 1024,
                ValueLengthLimit = MaxFieldBytes,
                ValueCountLimit = MaxFields,
            }, context.RequestAborted);
        }
        catch (InvalidDataException e)
        {
            throw FormLimit(e, maxBytes);
        }
        catch (IOException) when (!context.RequestAborted.IsCancellationRequested)
        {
            // A boundary that never closes, or bytes that are no multipart at all: the reader runs out of body.
            throw new ApiException(StatusCodes.Status400BadRequest,
                "the multipart body is truncated or malformed (every part needs its headers and the body must end with the closing boundary)");
        }
        var file = form.Files.GetFile(ImageField) ?? form.Files.FirstOrDefault()
            ?? throw new ApiException(StatusCodes.Status400BadRequest, $"no image: send the X-ray in a file field named '{ImageField}'", ImageField);
        if (file.Length > maxBytes)
            throw new ApiException(StatusCodes.Status413PayloadTooLarge, $"the image is {file.Length / 1048576.0:0.#} MiB, above the limit of {maxBytes / 1048576.0:0.#} MiB", ImageField);
        if (file.Length == 0) throw new ApiException(StatusCodes.Status400BadRequest, "the image file is empty", ImageField);
        var bytes = new byte[file.Length];
        await using (var stream = file.OpenReadStream())
            await stream.ReadExactlyAsync(bytes, context.RequestAborted);
        return (bytes, form);
    }

    /// <summary>
    /// Decodes image bytes whatever their name or declared type says (415 when they are none of PNG, JPEG, DICOM) within
    /// the server's decode budget, and hands <paramref name="shrink"/> the full-resolution image: only what it returns
    /// outlives the call, so the large decode is garbage (and its memory given back) before any answer is generated.
    /// </summary>
    public static Task<T> DecodeAsync<T>(byte[] bytes, XrayServer server, Func<GrayImage, T> shrink, CancellationToken cancellationToken,
        string name = "uploaded image")
    {
        RequireImage(bytes, name);
        return server.Decodes.RunAsync(DecodeBudget.EstimateBytes(bytes), () => shrink(ImageFile.Decode(bytes, name, server.Options.ImageLimits)), cancellationToken);
    }

    public static void RequireImage(ReadOnlySpan<byte> bytes, string name)
    {
        if (ImageFile.Sniff(bytes) is null)
            throw new ApiException(StatusCodes.Status415UnsupportedMediaType, $"{name}: not a supported image (PNG, JPEG or DICOM, recognised by content)");
    }

    /// <summary>
    /// The bytes of a base64 data: URI (<c>data:image/png;base64,...</c>) and its media type. Other URLs are refused:
    /// the server fetches nothing.
    /// </summary>
    public static (string MediaType, byte[] Bytes) ParseDataUri(string url, long maxBytes, string param)
    {
        if (!url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
            throw new ApiException(StatusCodes.Status400BadRequest, "image_url must be a data: URI (data:image/png;base64,...); the server fetches no links", param);
        int comma = url.IndexOf(',');
        if (comma < 0) throw new ApiException(StatusCodes.Status400BadRequest, "image_url: a data: URI needs a comma before its data", param);
        var header = url.AsSpan(5, comma - 5);
        if (!header.EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
            throw new ApiException(StatusCodes.Status400BadRequest, "image_url: only base64 data: URIs are accepted", param);
        string mediaType = header[..^";base64".Length].ToString().Split(';')[0].Trim();
        if (mediaType.Length == 0) mediaType = "application/octet-stream";
        long encoded = url.Length - comma - 1;
        if (encoded / 4 * 3 > maxBytes)
            throw new ApiException(StatusCodes.Status413PayloadTooLarge, $"image_url: the image is about {encoded / 4 * 3 / 1048576.0:0.#} MiB, above the limit of {maxBytes / 1048576.0:0.#} MiB", param);
        var buffer = new byte[encoded / 4 * 3 + 3];
        if (!Convert.TryFromBase64Chars(url.AsSpan(comma + 1), buffer, out int written))
            throw new ApiException(StatusCodes.Status400BadRequest, "image_url: the data: URI is not valid base64", param);
        return (mediaType, buffer[..written]);
    }
}
