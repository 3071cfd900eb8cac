#version 330

// Keyframes arrive at 1-5 per second; the picture must move at display rate.
// Both layers zoom about the centre by the same factor since the keyframe arrived,
// and `previous` is a snapshot of the screen at that moment, so zooming it further
// continues exactly the motion the viewer was watching.
uniform sampler2D keyframe;
uniform sampler2D previous;
uniform vec2 fit;      // >= 1: the keyframe fitted whole; beyond its edges, a blurred copy of it fills the screen
uniform vec2 texel;    // one keyframe pixel in texture coordinates
uniform float sharpen; // unsharp amount at the keyframe's pixel scale, applied as it is enlarged
uniform float zoom;
uniform float fade;    // 0 shows the snapshot, 1 the keyframe

// The snapshot pass turns grading off, or tint and vignette would compound per keyframe.
uniform bool graded;
uniform vec3 shadows;
uniform vec3 highlights;
uniform float tint;
uniform float vignette;
uniform float aspect;

in vec2 uv;
out vec4 f_color;

const float FILL_LOD = 5.0;  // mip level of the fill: 32x smaller, i.e. only the picture's broad colours

// Catmull-Rom bicubic from 9 bilinear taps (the weights of neighbouring texels folded into one tap each):
// an enlargement that keeps edges where bilinear turns them into ramps.
vec3 bicubic(sampler2D tex, vec2 p) {
    vec2 size = 1.0 / texel;
    vec2 pos = p * size;
    vec2 centre = floor(pos - 0.5) + 0.5;
    vec2 f = pos - centre;
    vec2 w0 = f * (-0.5 + f * (1.0 - 0.5 * f));
    vec2 w1 = 1.0 + f * f * (-2.5 + 1.5 * f);
    vec2 w2 = f * (0.5 + f * (2.0 - 1.5 * f));
    vec2 w3 = f * f * (-0.5 + 0.5 * f);
    vec2 w12 = w1 + w2;
    vec2 t0 = (centre - 1.0) * texel;
    vec2 t3 = (centre + 2.0) * texel;
    vec2 t12 = (centre + w2 / w12) * texel;
    vec3 c = vec3(0.0);
    c += textureLod(tex, vec2(t0.x, t0.y), 0.0).rgb * w0.x * w0.y;
    c += textureLod(tex, vec2(t12.x, t0.y), 0.0).rgb * w12.x * w0.y;
    c += textureLod(tex, vec2(t3.x, t0.y), 0.0).rgb * w3.x * w0.y;
    c += textureLod(tex, vec2(t0.x, t12.y), 0.0).rgb * w0.x * w12.y;
    c += textureLod(tex, vec2(t12.x, t12.y), 0.0).rgb * w12.x * w12.y;
    c += textureLod(tex, vec2(t3.x, t12.y), 0.0).rgb * w3.x * w12.y;
    c += textureLod(tex, vec2(t0.x, t3.y), 0.0).rgb * w0.x * w3.y;
    c += textureLod(tex, vec2(t12.x, t3.y), 0.0).rgb * w12.x * w3.y;
    c += textureLod(tex, vec2(t3.x, t3.y), 0.0).rgb * w3.x * w3.y;
    return c;
}

vec3 keyframe_at(vec2 p) {
    vec2 q = 0.5 + p * fit;
    if (any(lessThan(q, vec2(0.0))) || any(greaterThan(q, vec2(1.0)))) {
        return textureLod(keyframe, clamp(0.5 + p, 0.0, 1.0), FILL_LOD).rgb;
    }
    vec3 c = bicubic(keyframe, q);
    // Unsharp mask at the keyframe's own pixel scale: the 4 diagonal half-texel taps average a 2x2 neighbourhood.
    vec3 blur = 0.25 * (textureLod(keyframe, q + texel * vec2(0.5, 0.5), 0.0).rgb
                      + textureLod(keyframe, q + texel * vec2(-0.5, 0.5), 0.0).rgb
                      + textureLod(keyframe, q + texel * vec2(0.5, -0.5), 0.0).rgb
                      + textureLod(keyframe, q + texel * vec2(-0.5, -0.5), 0.0).rgb);
    return c + sharpen * (c - blur);
}

void main() {
    vec2 p = (uv - 0.5) / zoom;
    vec3 before = texture(previous, 0.5 + p).rgb;
    vec3 after = clamp(keyframe_at(p), 0.0, 1.0);
    vec3 color = mix(before, after, fade);

    if (graded) {
        // Split toning: dark and bright parts get their own venue colour.
        float luma = dot(color, vec3(0.2126, 0.7152, 0.0722));
        color = mix(color, color * mix(shadows, highlights, luma), tint);

        // Round, not stretched to the screen: 1.0 at the corners.
        vec2 d = (uv - 0.5) * vec2(aspect, 1.0);
        float r = length(d) / length(vec2(aspect, 1.0) * 0.5);
        color *= 1.0 - vignette * smoothstep(0.35, 1.0, r);
    }
    f_color = vec4(clamp(color, 0.0, 1.0), 1.0);
}
